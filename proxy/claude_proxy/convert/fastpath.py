"""Fast paths: a stream's commonest event turned into its output by copying bytes, not by parsing and encoding.

Most events of a streamed answer are plain text deltas, and a chat chunk for one differs from the next only by its
text. So the chunk's event is written once around its text (`chunk_frame`) and each delta's text is spliced into it
(`text_delta`) as the JSON string Anthropic sent, without decoding it into a `str` and encoding it again.

What this relies on, each checked on every event (anything else is left to the general path, which parses the
event, feeds it to the translator and encodes what comes out):
- Anthropic writes a text delta as compact JSON, its keys in one order: `TEXT_DELTA_HEAD`, the block index (a JSON
  integer), `TEXT_DELTA_TEXT`, the text as one JSON string, `TEXT_DELTA_TAIL`, and nothing else.
- A JSON string without a backslash is written by orjson exactly as it arrived (orjson escapes only `"`, `\\` and
  control characters, which cannot stand raw in valid JSON); one with escapes is written again by orjson (`\\u00e9`
  becomes `é`, `\\/` becomes `/`), so the output is byte for byte what the general path writes.
- The text is validated by orjson as one JSON string: invalid UTF-8, a lone surrogate or a string followed by more
  fields is not a plain text delta.

`tests/proxy/test_fastpath.py` holds the parity test: for generated text deltas of any content, the fast path's bytes
equal the general path's, and whatever is not a plain text delta falls back.
"""

from __future__ import annotations

import orjson

# {"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}, as Anthropic writes it
TEXT_DELTA_HEAD = b'{"type":"content_block_delta","index":'
TEXT_DELTA_TEXT = b',"delta":{"type":"text_delta","text":'
TEXT_DELTA_TAIL = b"}}"
_HEAD, _TEXT, _TAIL = len(TEXT_DELTA_HEAD), len(TEXT_DELTA_TEXT), len(TEXT_DELTA_TAIL)


def text_delta(data: bytes, head: bytes = b"", tail: bytes = b"") -> bytes | None:
    """`head + text + tail`, where text is that of `data` (one event's JSON) as a JSON string, written as orjson
    writes it, when the event is a non-empty plain text delta; None for anything else."""
    if data[:_HEAD] != TEXT_DELTA_HEAD or data[-_TAIL:] != TEXT_DELTA_TAIL:
        return None
    at = data.find(TEXT_DELTA_TEXT, _HEAD)
    index = data[_HEAD:at]
    # A JSON integer: digits, no leading zero (at < 0 leaves a slice that is no integer either)
    if at < 0 or not index.isdigit() or (index[0] == 0x30 and len(index) > 1):
        return None
    text = data[at + _TEXT : -_TAIL]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not str or not value:
        return None
    # bytes.find, not `in`: `in` first tries its operand as an integer
    return head + (text if text.find(b"\\") < 0 else orjson.dumps(value)) + tail


def chunk_frame(event: dict[str, object], field: str) -> tuple[bytes, bytes]:
    """The server-sent event carrying `event` (whose `field` is "", the one place the text goes) as the bytes before
    and after the text: `text_delta`'s `head` and `tail`."""
    key = b'"' + field.encode() + b'":'
    head, tail = orjson.dumps(event).split(key + b'""')
    return b"data: " + head + key, tail + b"\n\n"
