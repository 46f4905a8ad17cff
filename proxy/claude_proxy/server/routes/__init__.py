"""One module per public route group: chat completions, Responses, Anthropic's messages, models, probes."""
