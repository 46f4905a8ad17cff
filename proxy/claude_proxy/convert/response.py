"""Anthropic message -> OpenAI `chat.completion`: content, tool calls, reasoning, finish reason and usage.

Pure, like the rest of `convert`. The streamed form of the same answer is `chat_stream`; both read the finish
reasons and usage fields from `tables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from claude_proxy.convert.tables import chat_usage, finish_reason
from claude_proxy.convert.wire import ToolCallOut


def tool_arguments(value: Any) -> str:
    """A tool_use input as OpenAI's arguments string (`"{}"` when empty, never null)."""
    if not value:
        return "{}"
    return orjson.dumps(value).decode()


def completion_id(message_id: str | None) -> str:
    return f"chatcmpl-{message_id}" if message_id else "chatcmpl-proxy"


def to_openai(message: Mapping[str, Any], *, model: str, created: int, json_tool: str | None = None) -> dict[str, Any]:
    """Translate an Anthropic message into an OpenAI `chat.completion`."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[ToolCallOut] = []
    json_answer: str | None = None
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use":
            if json_tool is not None and block.get("name") == json_tool:
                if json_answer is None:
                    json_answer = tool_arguments(block.get("input"))
                continue
            tool_calls.append(
                {
                    "id": block.get("id") or f"call_{len(tool_calls)}",
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": tool_arguments(block.get("input"))},
                }
            )
    if json_answer is not None:
        texts = [json_answer]  # the tool's JSON is the answer; any other text would make it invalid JSON
    finish = finish_reason(message.get("stop_reason"))
    if finish == "tool_calls" and not tool_calls:
        finish = "stop"
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        out_message["tool_calls"] = tool_calls
    if reasoning:
        out_message["reasoning_content"] = "".join(reasoning)
    return {
        "id": completion_id(message.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or model,
        "choices": [{"index": 0, "message": out_message, "logprobs": None, "finish_reason": finish}],
        "usage": chat_usage(message.get("usage")),
        "system_fingerprint": None,
    }
