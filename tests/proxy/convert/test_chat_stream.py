"""The stream translator on whole streams: recorded-style Anthropic transcripts replayed through decoder + translator
under every chunking, checked against the shapes OpenAI streams, against the official SDK's types and accumulator,
and against `to_openai` of the same message non-streamed."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from claude_proxy.convert.response import to_openai
from tests.fakes.anthropic import message, render_sse, text, thinking, tool_use
from tests.proxy.convert.chat_stream_support import (
    CREATED,
    MODEL,
    check_shape,
    fixture,
    reassemble,
    sdk_reassemble,
    splits,
    translate,
    usage,
)

# ---- recorded-style fixtures, every chunking -------------------------------------------------------------------------

EXPECTED: dict[str, dict[str, Any]] = {
    "text_utf8.sse": {
        "model": "claude-sonnet-4-6",
        "id": "chatcmpl-msg_01TextUtf8Answer",
        "content": "héllo wörld ✓ 日本語 🎉",
        "reasoning": "",
        "tool_calls": [],
        "finish_reason": "stop",
        "usage": usage(126, 9, cached=100),
    },
    "parallel_tools_crlf.sse": {
        "model": "claude-haiku-4-5",
        "id": "chatcmpl-msg_01ParallelTools",
        "content": "Checking both.",
        "reasoning": "",
        "tool_calls": [
            ("toolu_01Weather", "get_weather", {"city": "München", "units": ["c", 1]}),
            ("toolu_02Clock", "get_time", {}),
        ],
        "finish_reason": "tool_calls",
        "usage": usage(310, 48),
    },
    "thinking_signature.sse": {
        "model": "claude-opus-4-6",
        "id": "chatcmpl-msg_01ThinkingThenText",
        "content": "The answer is 4.",
        "reasoning": "Let me think about 2+2…",
        "tool_calls": [],
        "finish_reason": "stop",
        "usage": usage(50, 57, cached=8),  # input and cache counts of message_delta win over message_start's
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reassembles_identically_under_every_split(name: str) -> None:
    expected = EXPECTED[name]
    stream = fixture(name)
    reference, error = translate([stream])
    assert error is None
    check_shape(reference, include_usage=True)
    result = reassemble(reference)
    assert reference[0]["model"] == expected["model"] and reference[0]["id"] == expected["id"]
    assert reference[0]["created"] == CREATED
    assert result["content"] == expected["content"]
    assert result["reasoning"] == expected["reasoning"]
    got_calls = [(c["id"], c["name"], json.loads(c["arguments"])) for c in result["tool_calls"]]
    assert got_calls == expected["tool_calls"]
    assert result["finish_reason"] == expected["finish_reason"]
    assert result["usage"] == expected["usage"]
    assert sdk_reassemble(reference) == result
    for pieces in splits(stream, seed=name):
        chunks, error = translate(pieces)
        assert error is None
        assert reassemble(chunks) == result, [len(p) for p in pieces]
        assert chunks == reference, [len(p) for p in pieces]


def test_crlf_fixture_really_uses_crlf() -> None:
    stream = fixture("parallel_tools_crlf.sse")
    assert stream.count(b"\r\n") == stream.count(b"\n") > 20


def test_json_object_fixture_under_every_split() -> None:
    stream = fixture("json_object.sse")
    reference, error = translate([stream], json_tool="json_response")
    assert error is None
    check_shape(reference, include_usage=True)
    result = reassemble(reference)
    assert json.loads(result["content"]) == {"name": "Zoë", "tags": ["a", "ü"]}
    assert result["content"] == '{"name": "Zoë", "tags": ["a", "ü"]}'  # the preamble text is not part of it
    assert result["tool_calls"] == [] and result["finish_reason"] == "stop"
    assert result["usage"] == usage(96, 21, cached=32)
    assert sdk_reassemble(reference) == result
    for pieces in splits(stream, seed="json"):
        chunks, error = translate(pieces, json_tool="json_response")
        assert error is None and chunks == reference, [len(p) for p in pieces]
    # the same stream outside json_object mode is an ordinary tool call after the text
    plain = reassemble(translate([stream])[0])
    assert plain["content"] == "Here is the JSON:" and plain["finish_reason"] == "tool_calls"
    assert [(c["id"], c["name"]) for c in plain["tool_calls"]] == [("toolu_01Json", "json_response")]


def test_mid_stream_error_raises_the_upstream_error_under_every_split() -> None:
    stream = fixture("error_overloaded.sse")
    reference, error = translate([stream])
    assert error is not None
    assert error.upstream_status == 529
    assert (error.status, error.type, error.code, error.upstream_type) == (
        503,
        "overloaded_error",
        "overloaded_error",
        "overloaded_error",
    )
    assert error.request_id == "req_011Overloaded" and "Overloaded" in error.message
    check_shape(reference, include_usage=True, complete=False)
    assert reassemble(reference)["content"] == "Partial ånswer"
    assert reassemble(reference)["finish_reason"] is None
    for pieces in splits(stream, seed="error"):
        chunks, err = translate(pieces)
        assert err is not None and (err.status, err.message) == (error.status, error.message)
        assert chunks == reference, [len(p) for p in pieces]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_without_message_stop_is_an_error_not_a_short_success(include_usage: bool) -> None:
    stream = fixture("truncated.sse")
    reference, error = translate([stream], include_usage=include_usage)
    assert error is not None and (error.status, error.type) == (502, "upstream_error")
    assert "ended before" in error.message
    check_shape(reference, include_usage=include_usage, complete=False)
    result = reassemble(reference)
    assert result["content"] == "The stream was cut hére"  # the unterminated last event is dropped
    assert result["finish_reason"] is None and result["usage"] is None
    for pieces in splits(stream, seed="truncated", three_way=10):
        chunks, err = translate(pieces, include_usage=include_usage)
        assert err is not None and err.status == 502
        assert chunks == reference, [len(p) for p in pieces]


def test_without_include_usage_no_chunk_has_usage() -> None:
    for name in EXPECTED:
        chunks, error = translate([fixture(name)], include_usage=False)
        assert error is None
        check_shape(chunks, include_usage=False)
        assert reassemble(chunks)["usage"] is None
        with_usage, _ = translate([fixture(name)], include_usage=True)
        assert chunks == with_usage[:-1]


# ---- the same message streamed and not streamed ----------------------------------------------------------------------

CACHED = {"input_tokens": 30, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 500, "output_tokens": 44}

CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "text": (message(text("héllo wörld ✓ 日本語 🎉"), usage=CACHED), None),
    "two_texts": (message(text("first part; "), text("second part")), None),
    "tools": (
        message(
            text("Let me look."),
            tool_use("toolu_a", "get_weather", {"city": "Zürich", "days": 3, "nested": {"k": [1, "✓"]}}),
            tool_use("toolu_b", "get_time", {}),
            stop_reason="tool_use",
            usage=CACHED,
        ),
        None,
    ),
    "tool_only": (message(tool_use("toolu_c", "list_files", {"path": "/tmp"}), stop_reason="tool_use"), None),
    "thinking": (message(thinking("Consider… the options 🤔"), text("Pick B."), usage=CACHED), None),
    "thinking_and_tool": (
        message(thinking("Need the time."), tool_use("toolu_d", "get_time", {"tz": "UTC"}), stop_reason="tool_use"),
        None,
    ),
    "max_tokens": (message(text("cut sh"), stop_reason="max_tokens"), None),
    "refusal": (message(text(""), stop_reason="refusal"), None),
    "json_object": (
        message(
            text("Sure:"),
            tool_use("toolu_j", "json_response", {"answer": 42, "why": "ünïcode"}),
            stop_reason="tool_use",
        ),
        "json_response",
    ),
    "json_object_empty": (message(tool_use("toolu_k", "json_response", {}), stop_reason="tool_use"), "json_response"),
    "json_tool_never_came": (message(text("plain answer after all")), "json_response"),
}


def _comparable(result: dict[str, Any], json_mode: bool = False) -> dict[str, Any]:
    """Arguments, and content in json_object mode, as parsed JSON: the text may differ in spacing and escapes, not
    in value. Content "" and None both mean no text (the role chunk always carries `content: ""`)."""
    out = dict(result)
    content = result["content"] or None
    out["content"] = json.loads(content) if json_mode and content and content.startswith("{") else content
    out["tool_calls"] = [(c["id"], c["name"], json.loads(c["arguments"])) for c in result["tool_calls"]]
    out["reasoning"] = result["reasoning"] or None
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_result_equals_the_non_streamed_translation(case: str) -> None:
    msg, json_tool = CASES[case]
    completion = to_openai(msg, model=MODEL, created=CREATED, json_tool=json_tool)
    (choice,) = completion["choices"]
    expected = {
        "content": choice["message"]["content"],
        "reasoning": choice["message"].get("reasoning_content"),
        "tool_calls": [
            {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in choice["message"].get("tool_calls", [])
        ],
        "finish_reason": choice["finish_reason"],
        "usage": completion["usage"],
    }
    events = list(render_sse(msg, piece=2))
    stream = b"".join(events)
    for pieces in (events, [stream], [bytes([b]) for b in stream], [stream[:101], stream[101:333], stream[333:]]):
        chunks, error = translate(pieces, json_tool=json_tool)
        assert error is None
        check_shape(chunks, include_usage=True)
        assert chunks[0]["id"] == completion["id"] and chunks[0]["model"] == completion["model"]
        result = reassemble(chunks)
        json_mode = json_tool is not None
        assert _comparable(result, json_mode) == _comparable(expected, json_mode)
        assert _comparable(sdk_reassemble(chunks), json_mode) == _comparable(expected, json_mode)


def test_render_sse_covers_what_the_fixtures_claim() -> None:
    # guard: the helper used for the equivalence cases does split tool input into several fragments
    msg, _ = CASES["tools"]
    fragments = [e for e in render_sse(msg, piece=2) if b"input_json_delta" in e]
    assert len(fragments) > 10


def _chunks_json(chunks: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(c) for c in chunks]


def test_chunks_serialise_with_orjson() -> None:
    chunks, _ = translate([fixture("thinking_signature.sse")])
    assert [orjson.loads(b) for b in _chunks_json(chunks)] == chunks
