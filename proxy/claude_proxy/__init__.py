"""claude-code-proxy: an OpenAI-compatible chat completions endpoint in front of Anthropic's Messages API."""

__version__ = "0.1.0"
