"""Anthropic Messages stream events -> OpenAI `chat.completion.chunk`s, as a pure state machine.

`feed(event)` takes one parsed event (the JSON of an SSE `data` field) and returns the chunks it produces;
`finish()` is called once the upstream stream has ended. No I/O, no logging, no globals; events are never mutated.
The reassembled chunks equal what `response.to_openai` makes of the same message, non-streamed. `encode_chunks`
writes them as the stream's events; `fast_path` writes a plain text delta's event straight from Anthropic's bytes.

Mapping (Anthropic event -> chunk delta), after the shapes OpenAI itself streams:
- message_start -> the first chunk, `{"role": "assistant", "content": ""}`; it fixes `id`, `model` and the
  input-side usage.
- text_delta -> `content`; thinking_delta -> `reasoning_content`.
- tool_use block -> one tool call with its own `index` (0, 1, … in order of the calls, not the block index): `id`,
  `type`, `function.name` and empty `arguments` on content_block_start, then every non-empty partial_json as an
  `arguments` fragment. A call that streamed no input gets its whole input (`{}` when empty) when it ends, so the
  fragments always concatenate to a JSON object.
- message_delta -> stop_reason and usage are remembered; message_stop -> `{}` with the mapped `finish_reason`,
  then, with include_usage, one chunk with `choices: []` and `usage`.
- error event -> `UpstreamError` with the HTTP status of the error type; a stream that ends without message_stop
  is an error too (`UnusableAnswer`, 502), never a short success.
- ping, signature_delta, citations_delta, content_block_stop of text/thinking blocks, and any unknown event, delta
  or block type produce nothing.

json_object mode (`json_tool` set): the forced tool's input is the answer, so its fragments are streamed as
`content`. Text a client has received cannot be taken back, and `to_openai` drops text written before the tool, so
text blocks are held back until it is known whether the tool comes: dropped when it does, sent just before the
finish chunk when it never does. Anthropic forces the tool by prefilling the turn, so in practice no text precedes it
and nothing is delayed. Text after the tool is dropped: the JSON already sent is the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from claude_proxy.convert.errors import upstream_error
from claude_proxy.convert.fastpath import chunk_frame, text_delta
from claude_proxy.convert.response import completion_id, tool_arguments
from claude_proxy.convert.tables import chat_usage, error_status, finish_reason, merge_usage
from claude_proxy.errors import UnusableAnswer

_TEXT, _THINKING, _TOOL, _JSON = "text", "thinking", "tool", "json"


def encode_chunks(chunks: list[dict[str, Any]]) -> bytes:
    """Chunks as a chat completions stream carries them: one `data:` event each."""
    if len(chunks) == 1:  # most network reads carry one event, which makes one chunk
        return b"data: " + orjson.dumps(chunks[0]) + b"\n\n"
    return b"".join([b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks])


class _Block:
    """An open content block, by its Anthropic index."""

    __slots__ = ("call", "input", "kind", "streamed")

    def __init__(self, kind: str, call: int = -1, input: Any = None) -> None:
        self.kind = kind
        self.call = call  # tool call index in the OpenAI stream
        self.input = input  # tool input given on content_block_start
        self.streamed = False  # a non-empty input fragment was sent


class StreamTranslator:
    def __init__(self, *, model: str, created: int, include_usage: bool, json_tool: str | None = None) -> None:
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._json_tool = json_tool
        self._id = completion_id(None)
        self._started = False
        self._done = False
        self._usage_sent = False
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._blocks: dict[int, _Block] = {}
        self._calls = 0  # tool calls announced so far
        self._held: list[str] = []  # json_object mode: text waiting to learn whether the json tool comes
        self._json_seen = False
        self._frame: tuple[bytes, bytes] | None = None  # a content chunk's event before and after its text

    @property
    def usage(self) -> Mapping[str, Any]:
        """Anthropic's usage counts seen so far (input side from message_start, output from message_delta)."""
        return self._usage

    @property
    def done(self) -> bool:
        """message_stop was seen."""
        return self._done

    @property
    def stop_reason(self) -> str | None:
        """Anthropic's stop reason, once message_delta brought it."""
        return self._stop_reason

    @property
    def model(self) -> str:
        """The model Anthropic's message_start named (the requested one before it)."""
        return self._model

    # ---- chunks ----------------------------------------------------------------------------------------------------

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def _start(self, out: list[dict[str, Any]]) -> None:
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))

    def _arguments(self, out: list[dict[str, Any]], block: _Block, fragment: str) -> None:
        block.streamed = True
        if block.kind == _JSON:
            out.append(self._chunk({"content": fragment}))
        else:
            out.append(self._chunk({"tool_calls": [{"index": block.call, "function": {"arguments": fragment}}]}))

    def _close(self, out: list[dict[str, Any]], index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is not None and block.kind in (_TOOL, _JSON) and not block.streamed:
            self._arguments(out, block, tool_arguments(block.input))

    @property
    def fast_path(self) -> Callable[[bytes], bytes | None]:
        """The fast path (`convert.fastpath`): an event's raw JSON -> the bytes `encode_chunks(feed(event))` would
        be, when it is a plain text delta of a started plain answer; None for anything else, which `feed` takes."""
        return self._text_delta_line

    def _text_delta_line(self, data: bytes) -> bytes | None:
        if not self._started or self._done or self._json_tool is not None:
            return None
        frame = self._frame
        if frame is None:
            frame = self._frame = chunk_frame(self._chunk({"content": ""}), "content")
        return text_delta(data, frame[0], frame[1])

    # ---- events ----------------------------------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One Anthropic stream event -> the chunks it produces (0..n)."""
        out: list[dict[str, Any]] = []
        if self._done:
            return out
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            # Most events of a stream are text deltas of a started answer: one chunk, the shortest way.
            if (
                self._started
                and self._json_tool is None
                and isinstance(delta, dict)
                and delta.get("type") == "text_delta"
            ):
                text = delta.get("text")
                if isinstance(text, str) and text:
                    out.append(self._chunk({"content": text}))
                return out
            self._delta(out, event)
        elif kind == "content_block_start":
            self._block_start(out, event)
        elif kind == "content_block_stop":
            index = event.get("index")
            if isinstance(index, int):
                self._close(out, index)
        elif kind == "message_start":
            self._message_start(out, event)
        elif kind == "message_delta":
            self._message_delta(event)
        elif kind == "message_stop":
            self._message_stop(out)
        elif kind == "error":
            raise upstream_error(error_status(event), event, None)
        return out

    def _message_start(self, out: list[dict[str, Any]], event: Mapping[str, Any]) -> None:
        if self._started:
            return
        message = event.get("message")
        if isinstance(message, Mapping):
            message_id = message.get("id")
            self._id = completion_id(message_id if isinstance(message_id, str) else None)
            model = message.get("model")
            if isinstance(model, str) and model:
                self._model = model
            merge_usage(self._usage, message.get("usage"))
        self._start(out)

    def _block_start(self, out: list[dict[str, Any]], event: Mapping[str, Any]) -> None:
        index, block = event.get("index"), event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, Mapping):
            return
        self._start(out)
        btype = block.get("type")
        if btype == "text":
            self._blocks[index] = _Block(_TEXT)
            self._text(out, block.get("text"))
        elif btype == "thinking":
            self._blocks[index] = _Block(_THINKING)
            self._thinking(out, block.get("thinking"))
        elif btype == "tool_use":
            name = block.get("name") if isinstance(block.get("name"), str) else ""
            if self._json_tool is not None and name == self._json_tool:
                self._json_seen = True
                self._held = []
                self._blocks[index] = _Block(_JSON, input=block.get("input"))
                return
            call = self._calls
            self._calls += 1
            self._blocks[index] = _Block(_TOOL, call, block.get("input"))
            tool_id = block.get("id")
            head = {
                "index": call,
                "id": tool_id if isinstance(tool_id, str) and tool_id else f"call_{call}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [head]}))

    def _delta(self, out: list[dict[str, Any]], event: Mapping[str, Any]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return
        dtype = delta.get("type")
        if dtype == "text_delta":
            self._start(out)
            self._text(out, delta.get("text"))
        elif dtype == "thinking_delta":
            self._start(out)
            self._thinking(out, delta.get("thinking"))
        elif dtype == "input_json_delta":
            index, fragment = event.get("index"), delta.get("partial_json")
            block = self._blocks.get(index) if isinstance(index, int) else None
            if block is not None and block.kind in (_TOOL, _JSON) and isinstance(fragment, str) and fragment:
                self._arguments(out, block, fragment)

    def _text(self, out: list[dict[str, Any]], text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        if self._json_tool is None:
            out.append(self._chunk({"content": text}))
        elif not self._json_seen:
            self._held.append(text)

    def _thinking(self, out: list[dict[str, Any]], thinking: Any) -> None:
        if isinstance(thinking, str) and thinking:
            out.append(self._chunk({"reasoning_content": thinking}))

    def _message_delta(self, event: Mapping[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, Mapping) and isinstance(delta.get("stop_reason"), str):
            self._stop_reason = delta["stop_reason"]
        merge_usage(self._usage, event.get("usage"))

    def _message_stop(self, out: list[dict[str, Any]]) -> None:
        self._done = True
        self._start(out)
        for index in list(self._blocks):  # blocks a max_tokens cut left open
            self._close(out, index)
        if self._held:
            out.append(self._chunk({"content": "".join(self._held)}))
            self._held = []
        finish = finish_reason(self._stop_reason)
        if finish == "tool_calls" and not self._calls:
            finish = "stop"
        out.append(self._chunk({}, finish))
        out.extend(self._usage_chunk())

    def _usage_chunk(self) -> list[dict[str, Any]]:
        if not self._include_usage or self._usage_sent:
            return []
        self._usage_sent = True
        return [
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "system_fingerprint": None,
                "choices": [],
                "usage": chat_usage(self._usage),
            }
        ]

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: the chunks still owed, or UnusableAnswer when it ended before message_stop.

        The finish and usage chunks already go out with message_stop, so after a complete stream this is empty.
        """
        if not self._done:
            raise UnusableAnswer("Anthropic API stream ended before the message was complete", code="incomplete_stream")
        return self._usage_chunk()
