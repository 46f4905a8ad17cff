"""The one path to Anthropic: the HTTP client, SSE decoding, the API caller, login state, rate limits, the relay."""
