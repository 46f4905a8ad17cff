"""Anthropic Messages API request shapes, as TypedDicts: what `/v1/messages` takes (and the proxy builds).

The passthrough forwards bodies unchanged and Anthropic validates them; these types document the shape (in
`/openapi.json`) and name the fields the translation writes. Unknown fields are allowed, as Anthropic adds them.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class Message(TypedDict):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Tool(TypedDict):
    name: str
    description: NotRequired[str]
    input_schema: dict[str, Any]


class CountTokensRequest(TypedDict):
    """POST /v1/messages/count_tokens."""

    model: str
    messages: list[Message]
    system: NotRequired[str | list[TextBlock]]
    tools: NotRequired[list[Tool]]
    tool_choice: NotRequired[dict[str, Any]]
    thinking: NotRequired[dict[str, Any]]


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: int
    stream: NotRequired[bool]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    stop_sequences: NotRequired[list[str]]
    metadata: NotRequired[dict[str, Any]]
    output_config: NotRequired[dict[str, Any]]
