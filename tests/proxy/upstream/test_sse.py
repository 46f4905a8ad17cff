"""The SSE decoder against the WHATWG event-stream rules, under every way a network can chunk a stream."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claude_proxy.upstream.sse import DONE, ServerSentEvent, SSEDecoder, encode_data
from tests import paths

FIXTURES = paths.FIXTURES / "sse"


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    decoder.flush()
    return events


def ev(data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


# ---- field parsing ---------------------------------------------------------------------------------------------------


def test_event_and_data_fields() -> None:
    assert decode([b'event: message_start\ndata: {"a": 1}\n\n']) == [ev('{"a": 1}', "message_start")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode([b"data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\n"]) == [ev("x"), ev("x"), ev(" x"), ev("\tx")]


def test_value_keeps_later_colons() -> None:
    assert decode([b"data: a: b:c\n\n"]) == [ev("a: b:c")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode([b"data: first\ndata:\ndata: third\n\n"]) == [ev("first\n\nthird")]


def test_comments_are_ignored() -> None:
    assert decode([b": keep-alive\n:\ndata: x\n: inside\n\n"]) == [ev("x")]


def test_spec_example_field_without_colon() -> None:
    # The WHATWG example: "data" alone is a data field with an empty value; the last block lacks its blank line.
    assert decode([b"data\n\ndata\ndata\n\ndata:"]) == [ev(""), ev("\n")]


def test_event_without_data_is_not_dispatched_and_its_type_does_not_leak() -> None:
    assert decode([b"event: ping\n\ndata: x\n\n"]) == [ev("x")]
    assert decode([b"event: a\nid: 1\n\n\n\n"]) == []


def test_empty_event_field_means_default_type() -> None:
    assert decode([b"event:\ndata: x\n\n"]) == [ev("x")]


def test_unknown_fields_are_ignored() -> None:
    assert decode([b"foo: bar\ndata: x\nbaz\n\n"]) == [ev("x")]


def test_field_names_are_case_sensitive() -> None:
    assert decode([b"Data: x\nEVENT: y\ndata: z\n\n"]) == [ev("z")]


def test_last_event_id_sticks_and_nul_ids_are_ignored() -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\n"
    assert decode([stream]) == [ev("a", id="1"), ev("b", id="1"), ev("c", id="1"), ev("d", id="")]


def test_retry_must_be_digits_and_belongs_to_its_event() -> None:
    stream = (
        b"retry: 1500\ndata: a\n\ndata: b\n\nretry: 1x\ndata: c\n\nretry: -5\ndata: d\n\nretry: \xc2\xb2\ndata: e\n\n"
    )
    assert decode([stream]) == [ev("a", retry=1500), ev("b"), ev("c"), ev("d"), ev("e")]


# ---- line ends, BOM, encoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol: bytes) -> None:
    stream = eol.join([b"event: x", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    assert decode([stream]) == [ev("1\n2", "x"), ev("3")]


def test_mixed_line_endings() -> None:
    assert decode([b"data: 1\r\ndata: 2\rdata: 3\n\r\n"]) == [ev("1\n2\n3")]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [ev("a\nb")]


def test_cr_at_chunk_end_followed_by_other_bytes() -> None:
    assert decode([b"data: a\r", b"data: b\r", b"\r", b"data: c\r\r"]) == [ev("a\nb"), ev("c")]


def test_lf_after_a_consumed_cr_only_skipped_once() -> None:
    # CR ends the line, the LF right after it is part of the same line end; a second LF is a blank line.
    assert decode([b"data: a\r", b"\n", b"\n"]) == [ev("a")]


def test_leading_bom_is_stripped_once() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode([bom + b"data: x\n\n"]) == [ev("x")]
    # a second BOM is part of the first field name, which then is unknown
    assert decode([bom + bom + b"data: x\n\ndata: y\n\n"]) == [ev("y")]
    # a BOM anywhere else is content
    assert decode([b"data: " + bom + b"x\n\n"]) == [ev("\ufeffx")]


@pytest.mark.parametrize("cut", [1, 2])
def test_bom_split_across_chunks(cut: int) -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert decode([stream[:cut], stream[cut:]]) == [ev("x")]
    assert decode([bytes([b]) for b in stream]) == [ev("x")]


def test_stream_shorter_than_a_bom() -> None:
    assert decode([b"\xef"]) == []
    assert decode([b"\xef", b"\n"]) == []  # an unknown field named "\ufffd", then nothing to dispatch


def test_multibyte_characters_split_at_every_byte() -> None:
    text = "héllo wörld ✓ 日本語 🎉"
    stream = f"data: {text}\n\n".encode()
    for i in range(len(stream) + 1):
        assert decode([stream[:i], stream[i:]]) == [ev(text)], i
    assert decode([bytes([b]) for b in stream]) == [ev(text)]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert decode([b"data: a\xffb\xe2\x9c\n\n"]) == [ev("a\ufffdb\ufffd")]


# ---- end of stream ---------------------------------------------------------------------------------------------------


def test_flush_drops_an_event_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: partial\n") == [ev("complete")]
    decoder.flush()
    assert decoder.feed(b"\n") == []  # the partial event is gone: a blank line now dispatches nothing


def test_flush_drops_an_unterminated_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: part") == [ev("complete")]
    decoder.flush()
    assert decoder.feed(b"ial\n\n") == []  # the unterminated line is gone: what follows starts a new line


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ev("a")]
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: b\n\nda") == [ev("b")]
    assert decoder.feed(b"ta: c\n\n") == [ev("c")]


# ---- encoder ---------------------------------------------------------------------------------------------------------


def test_encoder_shapes() -> None:
    assert encode_data(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"


def test_encoded_json_round_trips_through_the_decoder() -> None:
    payloads = [{"text": "line\r\nbreak\rcr\nlf", "u": "日本語 🎉 \u2028\u2029"}, {"empty": ""}, [1, None, True]]
    stream = b"".join(encode_data(orjson.dumps(p)) for p in payloads) + DONE
    events = decode([stream])
    assert [e.data for e in events[:-1]] == [orjson.dumps(p).decode() for p in payloads]
    assert [orjson.loads(e.data) for e in events[:-1]] == payloads
    assert events[-1] == ev("[DONE]")


# ---- recorded-style fixtures under awkward chunking ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sse")), ids=lambda p: p.stem)
def test_fixtures_decode_identically_under_any_chunking(path: Path) -> None:
    stream = path.read_bytes()
    whole = decode([stream])
    assert whole, "every fixture holds events"
    assert all(orjson.loads(e.data)["type"] == e.event for e in whole)
    for i in range(len(stream) + 1):
        assert decode([stream[:i], stream[i:]]) == whole, i
    rng = random.Random(path.name)
    for _ in range(50):
        a, b = sorted(rng.sample(range(len(stream) + 1), 2))
        assert decode([stream[:a], stream[a:b], stream[b:]]) == whole, (a, b)
    assert decode([bytes([b]) for b in stream]) == whole


# ---- property: any events, any chunking ------------------------------------------------------------------------------

_line_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.one_of(st.none(), st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
            st.lists(_line_text, min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_events_survive_any_chunking(
    events: list[tuple[str | None, list[str]]], eol: bytes, cuts: list[int]
) -> None:
    stream = b""
    for name, lines in events:
        if name is not None:
            stream += b"event: " + name.encode() + eol
        for line in lines:
            stream += b"data: " + line.encode() + eol
        stream += eol
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [ev("\n".join(lines), name) for name, lines in events]
    assert decode(pieces) == expected


_field_line = st.sampled_from(
    [
        *(b"retry: 5\n", b"id: 7\n", b": comment\n", b"event: orphan\n", b"data: loose\n", b"\n", b"event"),
        *(
            b"data: x\r\n",
            b"event: a\ndata: cr\r\n\n",
            b"event: a\rdata: lone cr\n\n",
            b"event: a\ndata: 1\n\ndata: 2\n\n",
        ),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.tuples(st.sampled_from([b"ping", b"content_block_delta", b"a"]), _line_text).map(
                lambda t: b"event: " + t[0] + b"\ndata: " + t[1].encode() + b"\n\n"
            ),
            _field_line,
        ),
        min_size=1,
        max_size=8,
    ),
    whole_reads=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4),
)
def test_data_only_decoding_matches_the_full_decoder(parts: list[bytes], whole_reads: bool, cuts: list[int]) -> None:
    """`feed_data` (with its shortcut for a read that is one whole event) gives the data `feed` gives, whatever came
    before and however the stream is cut."""
    stream = b"".join(parts)
    if whole_reads:
        pieces = parts
    else:
        points = sorted({min(c, len(stream)) for c in cuts})
        pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    full, data_only = SSEDecoder(), SSEDecoder()
    expected = [e.data.encode() for piece in pieces for e in full.feed(piece) if e.event != "ping"]
    got = [d.decode("utf-8", "replace").encode() for piece in pieces for d in data_only.feed_data(piece, b"ping")]
    assert got == expected
