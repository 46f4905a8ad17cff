"""Anthropic's Messages API as the `/v1/messages` passthrough sees it: the request shapes, as TypedDicts (what the
route takes and the proxy builds), and `StreamWatch`, which reads the usage off a stream passing through.

The passthrough forwards bodies unchanged and Anthropic validates them; these types document the shape (in
`/openapi.json`) and name the fields the translation writes. Unknown fields are allowed, as Anthropic adds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class Base64PDFSource(TypedDict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(TypedDict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class URLPDFSource(TypedDict):
    type: Literal["url"]
    url: str


class DocumentBlock(TypedDict):
    """A document (a PDF, or plain text) in a user turn or a tool result: what a chat `file` part or a Responses
    `input_file` becomes (`convert.request.document_block`)."""

    type: Literal["document"]
    source: Base64PDFSource | PlainTextSource | URLPDFSource
    title: NotRequired[str]
    context: NotRequired[str]
    citations: NotRequired[dict[str, Any]]
    cache_control: NotRequired[dict[str, Any]]


class Message(TypedDict):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock | DocumentBlock | dict[str, Any]]


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


class StreamWatch:
    """The relay's translator for a Messages stream passed through: Anthropic's bytes go to the client unchanged, so
    it writes nothing and never fails a stream; it only keeps the token counts of message_start and message_delta
    (for the access log and the metrics), the model message_start names and the stop reason (for the traces)."""

    __slots__ = ("_usage", "model", "stop_reason")
    fast_path = None  # nothing to translate

    def __init__(self) -> None:
        self._usage: dict[str, Any] = {}
        self.model: str | None = None  # what message_start named
        self.stop_reason: str | None = None  # what message_delta brought

    @property
    def usage(self) -> Mapping[str, Any]:
        """The counts seen so far (input side from message_start, output from message_delta)."""
        return self._usage

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            holder = event.get("message")
            model = holder.get("model") if isinstance(holder, Mapping) else None
            self.model = model if isinstance(model, str) else None
        elif kind == "message_delta":
            holder = event
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, Mapping) else None
            self.stop_reason = stop if isinstance(stop, str) else self.stop_reason
        else:
            return []
        usage = holder.get("usage") if isinstance(holder, Mapping) else None
        if isinstance(usage, Mapping):
            self._usage.update({key: value for key, value in usage.items() if isinstance(value, int)})
        return []

    def finish(self) -> list[dict[str, Any]]:
        return []
