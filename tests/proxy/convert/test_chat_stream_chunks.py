"""The stream translator's chunks, one by one: the exact sequence for a tool call, tool input and text however
Anthropic gives them, finish reasons, usage, tolerated and late events, and inputs never mutated."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from claude_proxy.convert.chat_stream import StreamTranslator
from tests.proxy.convert.chat_stream_support import (
    block_start,
    delta,
    deltas_of,
    events_of,
    feed_all,
    fixture,
    reassemble,
    start_event,
    stop,
    usage,
)


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
    events = [orjson.loads(e) for e in events_of(fixture("parallel_tools_crlf.sse"))]
    frozen = copy.deepcopy(events)
    t = StreamTranslator(model="m", created=1, include_usage=True, json_tool="get_time")
    chunks = feed_all(t, events) + t.finish()
    assert events == frozen
    # and chunks do not share structure with the events (the relay may serialise them later)
    for chunk in chunks:
        chunk["choices"].clear()
    assert events == frozen
