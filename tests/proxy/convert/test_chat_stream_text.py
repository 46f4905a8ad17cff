"""Text in the stream translator: json_object mode holding text until the tool decides, and the spliced text delta
(the fast path for a plain text delta) against the chunk `feed` makes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claude_proxy.convert.chat_stream import StreamTranslator
from tests.proxy.convert.chat_stream_support import (
    block_start,
    delta,
    deltas_of,
    feed_all,
    reassemble,
    start_event,
    stop,
)

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


# ---- the spliced text delta --------------------------------------------------------------------------------------


def _started(**kwargs: Any) -> StreamTranslator:
    t = StreamTranslator(model="claude-x", created=7, include_usage=False, **kwargs)
    t.feed({"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "usage": {}}})
    t.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    return t


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=40), ascii_only=st.booleans(), index=st.integers(0, 12))
def test_a_spliced_text_delta_is_the_chunk_feed_makes(text: str, ascii_only: bool, index: int) -> None:
    """Whichever way Anthropic escapes the text (raw UTF-8 or \\u escapes), the spliced chunk reads as the one `feed`
    makes from the parsed event."""
    event = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=ascii_only).encode()
    spliced = _started().text_delta_json(data)
    assert spliced is not None
    assert orjson.loads(spliced) == _started().feed(event)[0]


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}',  # empty: no chunk
        b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","extra":1}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":{"y":"b"}}',
        b'{"type":"content_block_delta","index":x,"delta":{"type":"text_delta","text":"a"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}',
        b'{"type":"content_block_delta", "index":0,"delta":{"type":"text_delta","text":"a"}}',
        b'{"type":"message_stop"}',
    ],
)
def test_anything_but_a_plain_text_delta_is_left_to_feed(data: bytes) -> None:
    assert _started().text_delta_json(data) is None


def test_no_splice_before_the_answer_began_after_it_ended_or_in_json_object_mode() -> None:
    data = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}'
    assert StreamTranslator(model="m", created=1, include_usage=False).text_delta_json(data) is None
    assert _started(json_tool="json_answer").text_delta_json(data) is None
    ended = _started()
    ended.feed({"type": "message_stop"})
    assert ended.text_delta_json(data) is None
    assert _started().text_delta_json(data) is not None
