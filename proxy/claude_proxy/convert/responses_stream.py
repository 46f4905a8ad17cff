"""Anthropic Messages stream events -> OpenAI Responses stream events, as a pure state machine.

`feed(event)` takes one parsed Anthropic event and returns the Responses events it produces; `finish()` is called
once the upstream stream has ended; `fail(error)` gives the events that end a stream cut by `error`. No I/O, no
logging, no globals; events are never mutated. The events reassemble (as the openai SDKs' stream accumulators do it)
into what `responses.to_response` makes of the same message, non-streamed.

Event sequence, after the one OpenAI streams (every event carries a `sequence_number` counting from 0):
- message_start -> `response.created`, `response.in_progress` (the Response with status in_progress, no output).
- a text block -> `response.output_item.added` (a message item), `response.content_part.added` (an empty
  output_text), `response.output_text.delta` per fragment, then on content_block_stop `response.output_text.done`,
  `response.content_part.done`, `response.output_item.done`. The item opens at its first text, so an empty text
  block produces nothing (the non-streamed answer skips it too).
- a thinking block -> a `reasoning` item: `output_item.added`, `reasoning_summary_part.added`,
  `reasoning_summary_text.delta`…, `reasoning_summary_text.done`, `reasoning_summary_part.done`, `output_item.done`.
- a tool_use block -> a `function_call` item: `output_item.added` (empty arguments), then
  `function_call_arguments.delta` per partial_json fragment (the whole input, `{}` when empty, when none streamed),
  `function_call_arguments.done`, `output_item.done`.
- message_stop -> `response.completed`, or `response.incomplete` when Anthropic stopped for max_tokens or a refusal,
  with the whole Response (output, usage).
- an `error` event -> `UpstreamError`; a stream that ends without message_stop is an `UnusableAnswer` (502). Once
  output was sent, `fail` ends the stream with `response.failed` carrying the error.

Nothing is released before real output exists (a delta, or the end of the message): until then the events are held,
so a failure there can still be retried invisibly or answered as a plain HTTP error.

json_object mode (`json_tool` set): the forced tool's input is the answer, streamed as a message's output_text.
Text blocks are held until it is known whether that tool comes: dropped when it does, sent at the end when not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from claude_proxy.convert.errors import upstream_error
from claude_proxy.convert.response import tool_arguments
from claude_proxy.convert.responses import (
    call_item,
    item_id,
    message_item,
    output_text,
    reasoning_item,
    response_id,
    response_object,
    status_of,
)
from claude_proxy.convert.tables import error_status, merge_usage, responses_usage
from claude_proxy.errors import ProxyError, UnusableAnswer

# Events that announce output without carrying any: held back with the lifecycle events until real output comes.
_ANNOUNCE = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_summary_part.added",
    }
)
_TEXT, _THINKING, _TOOL, _JSON = "text", "thinking", "tool", "json"


def encode_events(events: list[dict[str, Any]]) -> bytes:
    """Server-sent events with the event name the Responses API sends beside each payload."""
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n" for event in events
    )


def _error_code(status: int) -> str:
    return "rate_limit_exceeded" if status == 429 else "server_error"


class _Item:
    """An Anthropic content block and the output item it becomes (`index` is -1 until the item is announced)."""

    __slots__ = ("call_id", "id", "index", "input", "kind", "name", "parts")

    def __init__(self, kind: str, *, call_id: str = "", name: str = "", input: Any = None) -> None:
        self.kind = kind
        self.index = -1
        self.id = ""
        self.call_id = call_id
        self.name = name
        self.input = input
        self.parts: list[str] = []


class ResponsesStreamTranslator:
    fast_path = None  # every event goes through `feed`: a delta's event carries ids and a sequence number

    def __init__(self, *, model: str, created_at: int, echo: Mapping[str, Any], json_tool: str | None = None) -> None:
        self._model = model
        self._created_at = created_at
        self._echo = echo
        self._json_tool = json_tool
        self._message_id: str | None = None
        self._sequence = 0
        self._queue: list[dict[str, Any]] = []
        self._live = False
        self._started = False
        self._done = False
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._blocks: dict[int, _Item] = {}
        self._output: list[dict[str, Any] | None] = []  # finished items by output_index (None while open)
        self._held: list[str] = []  # json_object mode: text waiting to learn whether the json tool comes
        self._json_seen = False

    @property
    def usage(self) -> Mapping[str, Any]:
        """Anthropic's usage counts seen so far."""
        return self._usage

    @property
    def done(self) -> bool:
        return self._done

    @property
    def stop_reason(self) -> str | None:
        """Anthropic's stop reason, once message_delta brought it."""
        return self._stop_reason

    # ---- output ----------------------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        self._queue.append({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        if kind not in _ANNOUNCE:
            self._live = True

    def _release(self) -> list[dict[str, Any]]:
        if not self._live:
            return []
        out, self._queue = self._queue, []
        return out

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(
            id=response_id(self._message_id),
            created_at=self._created_at,
            model=self._model,
            echo=self._echo,
            output=[item for item in self._output if item is not None],
            status=status,
            **fields,
        )

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for kind in ("response.created", "response.in_progress"):
                self._event(kind, response=self._response("in_progress"))

    def _open(self, item: _Item) -> None:
        item.index = len(self._output)
        self._output.append(None)
        if item.kind in (_TEXT, _JSON):
            item.id = item_id("msg", self._message_id, item.index)
            added = message_item(item.id, "", "in_progress")
            added["content"] = []
            self._event("response.output_item.added", output_index=item.index, item=added)
            self._event(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=output_text(""),
            )
        elif item.kind == _THINKING:
            item.id = item_id("rs", self._message_id, item.index)
            self._event("response.output_item.added", output_index=item.index, item=reasoning_item(item.id, None))
            self._event(
                "response.reasoning_summary_part.added",
                item_id=item.id,
                output_index=item.index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        else:
            item.id = item_id("fc", self._message_id, item.index)
            added = call_item(item.id, item.call_id, item.name, "", "in_progress")
            self._event("response.output_item.added", output_index=item.index, item=added)

    def _append(self, item: _Item, fragment: str) -> None:
        if not fragment:
            return
        if item.index < 0:
            self._open(item)
        item.parts.append(fragment)
        if item.kind in (_TEXT, _JSON):
            self._event(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                delta=fragment,
                logprobs=[],
            )
        elif item.kind == _THINKING:
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=item.id,
                output_index=item.index,
                summary_index=0,
                delta=fragment,
            )
        else:
            self._event(
                "response.function_call_arguments.delta", item_id=item.id, output_index=item.index, delta=fragment
            )

    def _close(self, item: _Item) -> None:
        if item.kind in (_TOOL, _JSON) and not item.parts:
            self._append(item, tool_arguments(item.input))
        if item.index < 0:
            return
        whole = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind in (_TEXT, _JSON):
            self._event("response.output_text.done", **where, content_index=0, text=whole, logprobs=[])
            self._event("response.content_part.done", **where, content_index=0, part=output_text(whole))
            done = message_item(item.id, whole)
        elif item.kind == _THINKING:
            self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=whole)
            part = {"type": "summary_text", "text": whole}
            self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
            done = reasoning_item(item.id, whole)
        else:
            self._event("response.function_call_arguments.done", **where, arguments=whole)
            done = call_item(item.id, item.call_id, item.name, whole)
        self._output[item.index] = done
        self._event("response.output_item.done", output_index=item.index, item=done)

    # ---- events ----------------------------------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One Anthropic stream event -> the Responses events it releases (0..n)."""
        if self._done:
            return []
        kind = event.get("type")
        if kind == "content_block_delta":
            self._delta(event)
        elif kind == "content_block_start":
            self._block_start(event)
        elif kind == "content_block_stop":
            index = event.get("index")
            item = self._blocks.pop(index, None) if isinstance(index, int) else None
            if item is not None:
                self._close(item)
        elif kind == "message_start":
            self._message_start(event)
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            merge_usage(self._usage, event.get("usage"))
        elif kind == "message_stop":
            self._message_stop()
        elif kind == "error":
            raise upstream_error(error_status(event), event, None)
        return self._release()

    def _message_start(self, event: Mapping[str, Any]) -> None:
        if self._started:
            return
        message = event.get("message")
        if isinstance(message, Mapping):
            if isinstance(message.get("id"), str):
                self._message_id = message["id"]
            if isinstance(message.get("model"), str) and message["model"]:
                self._model = message["model"]
            merge_usage(self._usage, message.get("usage"))
        self._start()

    def _block_start(self, event: Mapping[str, Any]) -> None:
        index, block = event.get("index"), event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, Mapping):
            return
        self._start()
        btype = block.get("type")
        if btype == "text":
            item = self._blocks[index] = _Item(_TEXT)
            self._text(item, block.get("text"))
        elif btype == "thinking":
            item = self._blocks[index] = _Item(_THINKING)
            if isinstance(block.get("thinking"), str):
                self._append(item, block["thinking"])
        elif btype == "tool_use":
            name = block.get("name") if isinstance(block.get("name"), str) else ""
            if self._json_tool is not None and name == self._json_tool:
                self._json_seen = True
                self._held = []
                self._blocks[index] = _Item(_JSON, input=block.get("input"))
                return
            raw_id = block.get("id")
            call_id = raw_id if isinstance(raw_id, str) else ""
            item = self._blocks[index] = _Item(_TOOL, call_id=call_id, name=name or "", input=block.get("input"))
            self._open(item)
            if not item.call_id:
                item.call_id = item_id("call", self._message_id, item.index)

    def _delta(self, event: Mapping[str, Any]) -> None:
        delta, index = event.get("delta"), event.get("index")
        item = self._blocks.get(index) if isinstance(index, int) else None
        if not isinstance(delta, Mapping) or item is None:
            return
        dtype = delta.get("type")
        if dtype == "text_delta" and item.kind == _TEXT:
            self._text(item, delta.get("text"))
        elif dtype == "thinking_delta" and item.kind == _THINKING and isinstance(delta.get("thinking"), str):
            self._append(item, delta["thinking"])
        elif dtype == "input_json_delta" and item.kind in (_TOOL, _JSON) and isinstance(delta.get("partial_json"), str):
            self._append(item, delta["partial_json"])

    def _text(self, item: _Item, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        if self._json_tool is None:
            self._append(item, text)
        elif not self._json_seen:
            self._held.append(text)

    def _message_stop(self) -> None:
        self._start()
        for index in list(self._blocks):  # blocks a cut stream left open
            self._close(self._blocks.pop(index))
        if self._held:
            item = _Item(_TEXT)
            self._append(item, "".join(self._held))
            self._close(item)
            self._held = []
        status, details = status_of(self._stop_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        last = self._output[-1] if self._output else None
        if status == "incomplete" and last is not None and last["type"] in ("message", "function_call"):
            self._output[-1] = {**last, "status": "incomplete"}  # the item the cut ended, as the whole answer says
        response = self._response(status, incomplete_details=details, usage=responses_usage(self._usage))
        self._event(kind, response=response)
        self._done = True

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended: UnusableAnswer when it ended before message_stop (never a short success)."""
        if not self._done:
            raise UnusableAnswer("Anthropic API stream ended before the message was complete", code="incomplete_stream")
        return self._release()

    def fail(self, error: ProxyError) -> list[dict[str, Any]]:
        """The events that end a stream cut by `error` after output began: what was held, then response.failed."""
        self._live = True
        self._start()
        failure = {"code": _error_code(error.status), "message": error.message}
        usage = responses_usage(self._usage)
        self._event("response.failed", response=self._response("failed", error=failure, usage=usage))
        self._done = True
        return self._release()
