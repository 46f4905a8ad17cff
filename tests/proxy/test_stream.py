"""The stream translator: recorded-style Anthropic transcripts replayed through decoder + translator under every
chunking, checked against the shapes OpenAI streams, against the official SDK's types and accumulator, and against
`to_openai` of the same message non-streamed."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.convert.response import to_openai
from claude_proxy.errors import UpstreamError
from claude_proxy.upstream.sse import SSEDecoder
from tests.fakes.anthropic import message, render_sse, text, thinking, tool_use

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sse"
CREATED = 1_760_000_000
MODEL = "requested-model"


# ---- harness ---------------------------------------------------------------------------------------------------------


def translate(
    pieces: Iterable[bytes], *, include_usage: bool = True, json_tool: str | None = None
) -> tuple[list[dict[str, Any]], UpstreamError | None]:
    """Decode and translate a byte stream given in pieces; returns the chunks and the error that ended it, if any."""
    decoder = SSEDecoder()
    translator = StreamTranslator(model=MODEL, created=CREATED, include_usage=include_usage, json_tool=json_tool)
    chunks: list[dict[str, Any]] = []
    try:
        for piece in pieces:
            for event in decoder.feed(piece):
                chunks.extend(translator.feed(orjson.loads(event.data)))
        chunks.extend(translator.finish())
    except UpstreamError as exc:
        return chunks, exc
    assert translator.done
    return chunks, None


def splits(stream: bytes, *, seed: str, three_way: int = 40) -> Iterator[list[bytes]]:
    """Every 2-way split, some random 3-way splits, and byte by byte."""
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    rng = random.Random(seed)
    for _ in range(three_way):
        a, b = sorted(rng.sample(range(len(stream) + 1), 2))
        yield [stream[:a], stream[a:b], stream[b:]]
    yield [bytes([b]) for b in stream]


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client ends up with: joined content and reasoning, each call's id/name/arguments, finish, usage."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = usage = None
    for chunk in chunks:
        if "usage" in chunk:
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content"):
                content.append(delta["content"])
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id") or ""
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
            if choice["finish_reason"] is not None:
                finish = choice["finish_reason"]
    return {
        "content": "".join(content),
        "reasoning": "".join(reasoning),
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def check_shape(chunks: list[dict[str, Any]], *, include_usage: bool, complete: bool = True) -> None:
    """The protocol OpenAI clients parse (see the recorded OpenAI streams)."""
    assert chunks, "a stream always starts with the role chunk"
    head = chunks[0]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert (chunk["id"], chunk["created"], chunk["model"]) == (head["id"], head["created"], head["model"])
        assert chunk["id"].startswith("chatcmpl-")
        assert chunk["system_fingerprint"] is None
    assert head["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    body = chunks
    if include_usage and complete:
        *body, last = chunks
        assert last["choices"] == [] and set(last["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert not any("usage" in c for c in body)
    seen: set[int] = set()
    for n, chunk in enumerate(body):
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
        assert "role" not in choice["delta"] or n == 0
        is_last = n == len(body) - 1
        if complete and is_last:
            assert choice["delta"] == {} and choice["finish_reason"] in (
                "stop",
                "length",
                "tool_calls",
                "content_filter",
            )
        else:
            assert choice["finish_reason"] is None and (choice["delta"] or n == 0)
        for call in choice["delta"].get("tool_calls") or ():
            assert isinstance(call["index"], int)
            if call["index"] in seen:
                assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
                assert call["function"]["arguments"], "no empty fragments after the first"
            else:
                assert call["index"] == len(seen), "calls are numbered 0, 1, … in order"
                seen.add(call["index"])
                assert call["id"] and call["type"] == "function" and call["function"]["name"]
                assert call["function"]["arguments"] == ""


def sdk_reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Parse every chunk with the official SDK's type and accumulate them with its own stream state."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.current_completion_snapshot  # get_final_completion() refuses length/content_filter endings
    (choice,) = final.choices
    msg = choice.message
    return {
        "content": msg.content or "",
        "reasoning": (msg.model_extra or {}).get("reasoning_content") or "",
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in msg.tool_calls or ()
        ],
        "finish_reason": choice.finish_reason,
        "usage": final.usage.model_dump(exclude_none=True) if final.usage else None,
    }


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


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
    assert (error.status, error.type, error.code, error.upstream_type) == (
        529,
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


# ---- chunk shapes, one by one ----------------------------------------------------------------------------------------


def feed_all(translator: StreamTranslator, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(translator.feed(event))
    return out


def start_event(**usage: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "usage": usage or {"input_tokens": 3},
        },
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def stop(stop_reason: str = "end_turn", **usage: Any) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": usage or {"output_tokens": 2}},
        {"type": "message_stop"},
    ]


def deltas_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_exact_chunk_sequence_for_a_tool_call() -> None:
    t = StreamTranslator(model="m", created=5, include_usage=True)
    chunks = feed_all(
        t,
        [
            start_event(input_tokens=10, cache_read_input_tokens=4),
            {"type": "ping"},
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Hi"}),
            {"type": "content_block_stop", "index": 0},
            block_start(1, {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}),
            delta(1, {"type": "input_json_delta", "partial_json": ""}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"a":'}),
            delta(1, {"type": "input_json_delta", "partial_json": "1}"}),
            {"type": "content_block_stop", "index": 1},
            *stop("tool_use", output_tokens=9),
        ],
    )
    assert t.done
    assert t.finish() == []
    assert deltas_of(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "toolu_x", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == {
        "id": "chatcmpl-msg_1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "claude-x",
        "system_fingerprint": None,
        "choices": [],
        "usage": usage(14, 9, cached=4),
    }


def test_tool_input_given_on_block_start_without_deltas() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "ü", "n": [1]}}),
            {"type": "content_block_stop", "index": 0},
            block_start(1, {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}),
            {"type": "content_block_stop", "index": 1},
            *stop("tool_use"),
        ],
    )
    calls = reassemble(chunks)["tool_calls"]
    assert [(c["id"], json.loads(c["arguments"])) for c in calls] == [
        ("toolu_1", {"q": "ü", "n": [1]}),
        ("toolu_2", {}),
    ]
    assert calls[1]["arguments"] == "{}"


def test_open_tool_block_is_closed_at_message_stop() -> None:
    # max_tokens can end the message before content_block_stop; a call that streamed nothing still gets "{}".
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
            *stop("max_tokens"),
        ],
    )
    result = reassemble(chunks)
    assert result["tool_calls"] == [{"id": "toolu_1", "name": "f", "arguments": "{}"}]
    assert result["finish_reason"] == "length"
    assert deltas_of(chunks)[-1] == {}


def test_partial_tool_input_cut_by_max_tokens_is_not_padded() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
            delta(0, {"type": "input_json_delta", "partial_json": '{"a": "b'}),
            *stop("max_tokens"),
        ],
    )
    assert reassemble(chunks)["tool_calls"][0]["arguments"] == '{"a": "b'


def test_tool_call_index_is_per_call_not_per_block() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    events = [
        start_event(),
        block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "hm"}),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "x"}),
    ]
    for n in range(3):
        block = 2 + n
        events += [
            block_start(block, {"type": "tool_use", "id": f"toolu_{n}", "name": f"f{n}", "input": {}}),
            delta(block, {"type": "input_json_delta", "partial_json": f'{{"n": {n}}}'}),
            {"type": "content_block_stop", "index": block},
        ]
    chunks = feed_all(t, [*events, *stop("tool_use")])
    heads = [c for d in deltas_of(chunks) for c in d.get("tool_calls", ()) if "id" in c]
    assert [(h["index"], h["id"]) for h in heads] == [(0, "toolu_0"), (1, "toolu_1"), (2, "toolu_2")]
    calls = reassemble(chunks)["tool_calls"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_tool_use_stop_reason_without_tool_calls_is_stop() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "x"}),
            *stop("tool_use"),
        ],
    )
    assert reassemble(chunks)["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("brand_new_reason", "stop"),
    ],
)
def test_finish_reason_mapping(stop_reason: str, finish: str) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    assert reassemble(feed_all(t, [start_event(), *stop(stop_reason)]))["finish_reason"] == finish


def test_missing_message_delta_finishes_with_stop() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    chunks = feed_all(t, [start_event(input_tokens=5), {"type": "message_stop"}])
    assert deltas_of(chunks) == [{"role": "assistant", "content": ""}, {}]
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == usage(5, 0)


def test_null_and_missing_usage_fields_are_tolerated() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    chunks = feed_all(
        t,
        [
            start_event(input_tokens=7, output_tokens=1),
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 4, "input_tokens": None, "cache_read_input_tokens": None},
            },
            {"type": "message_stop"},
        ],
    )
    assert chunks[-1]["usage"] == usage(7, 4)


def test_model_and_id_fall_back_when_message_start_lacks_them() -> None:
    t = StreamTranslator(model="fallback-model", created=9, include_usage=False)
    chunks = feed_all(t, [{"type": "message_start", "message": {"content": []}}, *stop()])
    assert {(c["id"], c["model"], c["created"]) for c in chunks} == {("chatcmpl-proxy", "fallback-model", 9)}


def test_content_before_message_start_still_starts_with_the_role_chunk() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(t, [delta(0, {"type": "text_delta", "text": "early"}), *stop()])
    assert deltas_of(chunks) == [{"role": "assistant", "content": ""}, {"content": "early"}, {}]


def test_text_given_on_block_start_is_not_lost() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "text", "text": "pre"}),
            delta(0, {"type": "text_delta", "text": "fix"}),
            *stop(),
        ],
    )
    assert reassemble(chunks)["content"] == "prefix"


def test_second_message_start_does_not_restart_the_stream() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    chunks = feed_all(t, [start_event(), start_event(), *stop()])
    assert deltas_of(chunks) == [{"role": "assistant", "content": ""}, {}]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ping"},
        {"type": "brand_new_event", "x": 1},
        {"no_type": True},
        {"type": None},
        {"type": "content_block_delta"},
        {"type": "content_block_delta", "index": 0, "delta": None},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": None}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "abc"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "unknown_delta", "v": "x"}},
        {"type": "content_block_delta", "index": 7, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_delta", "index": "0", "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_start"},
        {"type": "content_block_start", "index": 1, "content_block": None},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "x"}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search"},
        },
        {"type": "content_block_start", "index": 1, "content_block": {"type": "unknown_block"}},
        {"type": "content_block_stop"},
        {"type": "content_block_stop", "index": 42},
        {"type": "message_delta"},
        {"type": "message_delta", "delta": None, "usage": None},
    ],
)
def test_tolerated_events_produce_nothing(event: dict[str, Any]) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event(), block_start(0, {"type": "text", "text": ""})])
    before = copy.deepcopy(event)
    assert t.feed(event) == []
    assert event == before
    chunks = feed_all(t, stop())
    assert deltas_of(chunks) == [{}] and t.done


def test_events_after_message_stop_are_ignored() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event(), *stop()])
    assert t.feed(delta(0, {"type": "text_delta", "text": "late"})) == []
    assert t.feed({"type": "error", "error": {"type": "api_error", "message": "late"}}) == []
    assert t.feed({"type": "message_stop"}) == []
    assert t.finish() == [] and t.finish() == []


def test_usage_chunk_is_sent_once() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    chunks = feed_all(t, [start_event(), *stop()]) + t.finish() + t.finish()
    assert sum(1 for c in chunks if "usage" in c) == 1


def test_inputs_are_never_mutated() -> None:
    events = [orjson.loads(e) for e in _events_of(fixture("parallel_tools_crlf.sse"))]
    frozen = copy.deepcopy(events)
    t = StreamTranslator(model="m", created=1, include_usage=True, json_tool="get_time")
    chunks = feed_all(t, events) + t.finish()
    assert events == frozen
    # and chunks do not share structure with the events (the relay may serialise them later)
    for chunk in chunks:
        chunk["choices"].clear()
    assert events == frozen


def _events_of(stream: bytes) -> list[str]:
    decoder = SSEDecoder()
    return [e.data for e in decoder.feed(stream)]


# ---- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etype", "status"),
    [
        ("overloaded_error", 529),
        ("api_error", 500),
        ("rate_limit_error", 429),
        ("request_too_large", 413),
        ("timeout_error", 504),
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("billing_error", 402),
        ("brand_new_error", 500),
    ],
)
def test_error_event_status(etype: str, status: int) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event()])
    event = {"type": "error", "error": {"type": etype, "message": f"boom {etype}"}}
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert info.value.status == status
    assert info.value.upstream_type == etype
    assert f"boom {etype}" in info.value.message
    assert event == {"type": "error", "error": {"type": etype, "message": f"boom {etype}"}}


@pytest.mark.parametrize(
    "event", [{"type": "error"}, {"type": "error", "error": "text"}, {"type": "error", "error": {}}]
)
def test_malformed_error_event_is_still_an_error(event: dict[str, Any]) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert info.value.status == 500 and info.value.message


def test_context_overflow_in_a_stream_uses_openai_wording() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    event = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"},
    }
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert "maximum context length is 200000 tokens" in info.value.message


def test_finish_before_message_stop_raises_every_time() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event(), block_start(0, {"type": "text", "text": ""}), *stop()[:1]])  # message_delta, no stop
    assert not t.done
    for _ in range(2):
        with pytest.raises(UpstreamError) as info:
            t.finish()
        assert info.value.status == 502 and info.value.type == "upstream_error"


def test_empty_stream_is_an_error() -> None:
    chunks, error = translate([b""])
    assert chunks == [] and error is not None and error.status == 502


# ---- json_object mode ------------------------------------------------------------------------------------------------


def test_json_mode_holds_text_until_the_tool_decides() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False, json_tool="json_response")
    out = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Sure: "}),
        ],
    )
    assert deltas_of(out) == [{"role": "assistant", "content": ""}], "text is held back, not streamed"
    out = feed_all(
        t,
        [
            block_start(1, {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {}}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"ok": '}),
            delta(1, {"type": "input_json_delta", "partial_json": "true}"}),
            {"type": "content_block_stop", "index": 1},
            block_start(2, {"type": "text", "text": ""}),
            delta(2, {"type": "text_delta", "text": " trailing words"}),
            *stop("tool_use"),
        ],
    )
    assert deltas_of(out) == [{"content": '{"ok": '}, {"content": "true}"}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_json_mode_releases_held_text_when_the_tool_never_comes() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False, json_tool="json_response")
    out = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "a"}),
            delta(0, {"type": "text_delta", "text": "b"}),
            *stop("max_tokens"),
        ],
    )
    assert deltas_of(out) == [{"role": "assistant", "content": ""}, {"content": "ab"}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "length"


def test_json_mode_other_tools_stay_tool_calls_and_thinking_streams() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False, json_tool="json_response")
    out = feed_all(
        t,
        [
            start_event(),
            block_start(0, {"type": "thinking", "thinking": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
            block_start(1, {"type": "tool_use", "id": "toolu_o", "name": "other", "input": {"x": 1}}),
            {"type": "content_block_stop", "index": 1},
            *stop("tool_use"),
        ],
    )
    result = reassemble(out)
    assert result["reasoning"] == "hmm"
    assert result["tool_calls"] == [{"id": "toolu_o", "name": "other", "arguments": '{"x":1}'}]
    assert result["finish_reason"] == "tool_calls"


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
