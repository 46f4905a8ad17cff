"""Text in the stream translator: json_object mode holding text until the tool decides, and the spliced text delta
(the fast path for a plain text delta) against the chunk `feed` makes."""

from __future__ import annotations

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
