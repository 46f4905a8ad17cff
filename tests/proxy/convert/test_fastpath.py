"""The fast path (`convert.fastpath`, the chat translator's `fast_path`) against the general one: for a plain text
delta, however Anthropic escapes its text, the bytes written are exactly what parsing the event, feeding it to the
translator and encoding the chunk would write; for anything else the fast path declines, and never writes something
the general path would not."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from claude_proxy.convert.chat_stream import StreamTranslator, encode_chunks
from claude_proxy.convert.fastpath import TEXT_DELTA_HEAD, TEXT_DELTA_TAIL, TEXT_DELTA_TEXT, text_delta

_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _started(**kwargs: Any) -> StreamTranslator:
    t = StreamTranslator(model="claude-x", created=7, include_usage=False, **kwargs)
    t.feed({"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "usage": {}}})
    t.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    return t


def general(translator: StreamTranslator, data: bytes) -> bytes:
    """What the relay's general path writes for one event: parse, feed, encode."""
    return encode_chunks(translator.feed(orjson.loads(data)))


def _u(code: int, upper: bool) -> str:
    escape = f"\\u{code:04x}"
    return escape.upper().replace("\\U", "\\u") if upper else escape


@st.composite
def json_string(draw: st.DrawFn) -> tuple[str, str]:
    """A text and one of the many ways to write it as a JSON string: each character raw where JSON allows it, as a
    short escape, or as a \\u escape (upper or lower hex, surrogate pairs beyond the BMP)."""
    text = draw(st.text(min_size=1, max_size=30))
    out = []
    for char in text:
        code = ord(char)
        ways = []
        if char not in '"\\' and code >= 0x20:
            ways.append(char)
        if char in _SHORT:
            ways.append(_SHORT[char])
        upper = draw(st.booleans())
        if code <= 0xFFFF:
            ways.append(_u(code, upper))
        else:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            ways.append(_u(high, upper) + _u(low, upper))
        out.append(draw(st.sampled_from(ways)))
    return text, '"' + "".join(out) + '"'


@settings(max_examples=500, deadline=None)
@given(written=json_string(), index=st.integers(0, 10_000))
@example(written=("é/\"'\n", '"\\u00e9\\/\\"\'\\n"'), index=0)
@example(written=("\u2028\x7f", '"\u2028\x7f"'), index=3)
def test_the_fast_path_writes_the_general_paths_bytes(written: tuple[str, str], index: int) -> None:
    text, string = written
    data = b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%s}}' % (
        index,
        string.encode(),
    )
    assert orjson.loads(data)["delta"]["text"] == text  # the event says what it was generated to say
    fast = _started().fast_path(data)
    assert fast is not None
    assert fast == general(_started(), data)


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=40), ascii_only=st.booleans(), index=st.integers(0, 12))
def test_a_spliced_text_delta_is_the_chunk_feed_makes(text: str, ascii_only: bool, index: int) -> None:
    """Whichever way Anthropic escapes the text (raw UTF-8 or \\u escapes), the spliced chunk reads as the one `feed`
    makes from the parsed event."""
    event = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=ascii_only).encode()
    spliced = _started().fast_path(data)
    assert spliced is not None and spliced.startswith(b"data: ") and spliced.endswith(b"\n\n")
    assert orjson.loads(spliced[6:-2]) == _started().feed(event)[0]


_NEAR = st.sampled_from(
    [
        TEXT_DELTA_HEAD + b"0" + TEXT_DELTA_TEXT + b'"a"' + TEXT_DELTA_TAIL,
        TEXT_DELTA_HEAD + b"12" + TEXT_DELTA_TEXT + b'"h\\u00e9"' + TEXT_DELTA_TAIL,
        b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}',
    ]
)


@st.composite
def near_misses(draw: st.DrawFn) -> bytes:
    """A plain text delta with a few bytes replaced, inserted or cut: mostly no text delta any more."""
    data = bytearray(draw(_NEAR))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        change = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(st.sampled_from(b'"\\{}:,0 1a\xc3\xff\x00/'))
        if change == "replace" and at < len(data):
            data[at] = byte
        elif change == "insert":
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(near_misses(), st.binary(max_size=120)))
def test_anything_else_falls_back_and_nothing_differs_from_the_general_path(data: bytes) -> None:
    fast = _started().fast_path(data)
    if fast is None:
        return
    try:
        expected = general(_started(), data)
    except orjson.JSONDecodeError:
        pytest.fail(f"the fast path wrote an event the general path cannot read: {data!r}")
    assert fast == expected


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}',  # empty: no chunk
        b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","extra":1}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":{"y":"b"}}',
        b'{"type":"content_block_delta","index":x,"delta":{"type":"text_delta","text":"a"}}',
        b'{"type":"content_block_delta","index":07,"delta":{"type":"text_delta","text":"a"}}',  # not JSON
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}',
        b'{"type":"content_block_delta", "index":0,"delta":{"type":"text_delta","text":"a"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\\ud800"}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\xff"}}',
        b'{"type":"message_stop"}',
    ],
)
def test_anything_but_a_plain_text_delta_is_left_to_feed(data: bytes) -> None:
    assert text_delta(data) is None
    assert _started().fast_path(data) is None


def test_no_splice_before_the_answer_began_after_it_ended_or_in_json_object_mode() -> None:
    data = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}'
    assert StreamTranslator(model="m", created=1, include_usage=False).fast_path(data) is None
    assert _started(json_tool="json_answer").fast_path(data) is None
    ended = _started()
    ended.feed({"type": "message_stop"})
    assert ended.fast_path(data) is None
    assert _started().fast_path(data) is not None


def test_escapes_are_written_as_orjson_writes_them() -> None:
    assert text_delta(TEXT_DELTA_HEAD + b"0" + TEXT_DELTA_TEXT + b'"caf\\u00e9 \\/ \\u001F"' + TEXT_DELTA_TAIL) == (
        '"café / \\u001f"'.encode()
    )
    raw = TEXT_DELTA_HEAD + b"0" + TEXT_DELTA_TEXT + '"café \\" \\n"'.encode() + TEXT_DELTA_TAIL
    assert text_delta(raw) == '"café \\" \\n"'.encode()  # the escapes orjson writes itself
