"""Builders for the request translation's tests: a chat request translated with given options, messages, a tool."""

from typing import Any

from claude_proxy.config import Settings
from claude_proxy.convert.request import (
    Options,
    to_anthropic,
)
from claude_proxy.convert.wire import ChatRequest

OPTS = Settings.from_env({}).conversion_options()
NO_CACHE = Settings.from_env({"PROXY_PROMPT_CACHE": "off"}).conversion_options()


def translate(options: Options = NO_CACHE, **request: Any) -> dict[str, Any]:
    request.setdefault("model", "claude-sonnet-4-6")
    return to_anthropic(ChatRequest.model_validate(request), options).body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(id: str, name: str = "lookup", args: str = '{"q": 1}') -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
