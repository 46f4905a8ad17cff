"""The Responses API stream translator, pure: Anthropic event streams into Responses events. Every event is validated
with the official openai SDK's own pydantic model, and streams are reassembled with the SDK's own stream state."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from claude_proxy.convert.responses_stream import ResponsesStreamTranslator, encode_events
from claude_proxy.errors import UpstreamError
from claude_proxy.upstream.sse import SSEDecoder
from tests import paths
from tests.fakes.anthropic import message, render_sse, text, thinking, tool_use
from tests.proxy.convert.responses_support import CREATED, MODEL, echo_of, response_for

FIXTURES = paths.FIXTURES / "sse"
EVENT = TypeAdapter(ResponseStreamEvent)


def run_stream(
    pieces: list[bytes], *, json_tool: str | None = None
) -> tuple[list[dict[str, Any]], UpstreamError | None, ResponsesStreamTranslator]:
    decoder = SSEDecoder()
    translator = ResponsesStreamTranslator(
        model=MODEL, created_at=CREATED, echo=echo_of({"input": "x"}), json_tool=json_tool
    )
    events: list[dict[str, Any]] = []
    try:
        for piece in pieces:
            for sse in decoder.feed(piece):
                events += translator.feed(orjson.loads(sse.data))
        events += translator.finish()
    except UpstreamError as exc:
        return events, exc, translator
    return events, None, translator


def sdk_final(events: list[dict[str, Any]]) -> Response:
    """Validate every event with the SDK's model, check the numbering, and accumulate them with the SDK's state."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for number, raw in enumerate(events):
        assert raw["sequence_number"] == number
        state.handle_event(EVENT.validate_python(raw))
    final = state._completed_response
    assert final is not None, "no response.completed"
    return final


def comparable(response: Response) -> dict[str, Any]:
    out = response.model_dump(exclude_none=True, exclude={"created_at"})
    for item in out["output"]:
        item.pop("parsed_arguments", None)
        for part in item.get("content", ()):
            part.pop("parsed", None)
        if item["type"] == "function_call":
            item["arguments"] = json.loads(item["arguments"])
    return out


MESSAGES = {
    "text": message(text("Hello, wörld! ✓"), model=MODEL),
    "thinking": message(thinking("First, 2+2."), text("4"), model=MODEL),
    "tools": message(
        text("Both:"),
        tool_use("toolu_1", "a", {"x": [1, 2]}),
        tool_use("toolu_2", "b", {}),
        stop_reason="tool_use",
        model=MODEL,
    ),
    "empty_text": message(text(""), tool_use("toolu_1", "a", {"x": 1}), stop_reason="tool_use", model=MODEL),
    "max_tokens": message(text("Once upon a"), stop_reason="max_tokens", model=MODEL),
}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_streamed_result_equals_the_non_streamed_response(case: str) -> None:
    msg = MESSAGES[case]
    events, error, _ = run_stream(list(render_sse(msg, piece=2)))
    assert error is None
    if msg["stop_reason"] == "max_tokens":
        assert events[-1]["type"] == "response.incomplete"
        final = Response.model_validate(events[-1]["response"])
        for raw in events:
            EVENT.validate_python(raw)
    else:
        assert events[-1]["type"] == "response.completed"
        final = sdk_final(events)
    assert comparable(final) == comparable(response_for(msg))


def test_event_sequence_of_a_text_answer() -> None:
    events, _, _ = run_stream(list(render_sse(message(text("Hi there"), model=MODEL), piece=4)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    delta = events[4]
    assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (events[2]["item"]["id"], 0, 0)
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


@pytest.mark.parametrize("name", ["text_utf8.sse", "thinking_signature.sse", "parallel_tools_crlf.sse"])
def test_recorded_streams_under_awkward_splits(name: str) -> None:
    stream = (FIXTURES / name).read_bytes()
    whole, error, _ = run_stream([stream])
    assert error is None
    reference = comparable(sdk_final(whole))
    for cut in range(0, len(stream), max(1, len(stream) // 97)):
        events, error, _ = run_stream([stream[:cut], stream[cut:]])
        assert error is None and comparable(sdk_final(events)) == reference
    bytewise, _, _ = run_stream([bytes([b]) for b in stream])
    assert comparable(sdk_final(bytewise)) == reference


def test_json_object_stream_is_the_tool_input_as_text() -> None:
    events, error, _ = run_stream([(FIXTURES / "json_object.sse").read_bytes()], json_tool="json_response")
    assert error is None
    final = sdk_final(events)
    assert [item.type for item in final.output] == ["message"]
    json.loads(final.output_text)


def test_nothing_is_released_before_real_output() -> None:
    translator = ResponsesStreamTranslator(model=MODEL, created_at=CREATED, echo={}, json_tool=None)
    start = {"type": "message_start", "message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 3}}}
    assert translator.feed(start) == []
    assert (
        translator.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        == []
    )
    released = translator.feed(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "A"}}
    )
    assert [e["type"] for e in released][:2] == ["response.created", "response.in_progress"]
    assert released[-1]["type"] == "response.output_text.delta"


def test_mid_stream_error_ends_with_response_failed() -> None:
    events, error, translator = run_stream([(FIXTURES / "error_overloaded.sse").read_bytes()])
    assert error is not None and (error.status, error.upstream_status) == (503, 529)
    tail = translator.fail(error)
    assert tail[-1]["type"] == "response.failed"
    everything = events + tail
    for number, raw in enumerate(everything):
        assert raw["sequence_number"] == number
        EVENT.validate_python(raw)
    failed = Response.model_validate(tail[-1]["response"])
    assert failed.status == "failed" and failed.error is not None and "Overloaded" in failed.error.message
    assert "".join(e["delta"] for e in everything if e["type"] == "response.output_text.delta") == "Partial ånswer"


def test_a_stream_without_message_stop_is_an_error() -> None:
    _, error, _ = run_stream([(FIXTURES / "truncated.sse").read_bytes()])
    assert error is not None and error.code == "incomplete_stream"


def test_events_are_encoded_with_their_names() -> None:
    wire = encode_events([{"type": "response.output_text.delta", "sequence_number": 3, "delta": "é"}])
    expected = 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":3,'
    assert wire == (expected + '"delta":"é"}\n\n').encode()
