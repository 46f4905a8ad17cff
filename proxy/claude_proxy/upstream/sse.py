"""Server-sent events: an incremental decoder for what Anthropic sends and the encoder for what clients receive.

No I/O: the caller feeds network chunks in and gets whole events out. Parsing follows the WHATWG event-stream rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
- lines end with CRLF, LF or CR, and a chunk may end anywhere (inside a line, between CR and LF, inside a UTF-8
  character); one leading BOM is dropped;
- `:` starts a comment; `field: value` loses one leading space after the colon; a line without a colon is a field
  with an empty value; unknown fields are ignored;
- `data` lines of one event are joined with `\\n`; a blank line dispatches the event, unless it had no `data` line;
- `id` sets the last event id, which sticks to later events (an `id` containing NUL is ignored); `retry` must be
  ASCII digits and is reported on the event it came with;
- at the end of the stream an event without its closing blank line is dropped.

The buffer holds bytes and only whole lines are decoded, so a multi-byte character split across chunks is never
seen half (line ends are ASCII and never occur inside a UTF-8 sequence). Invalid UTF-8 becomes U+FFFD, as the
spec's decoder does.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"

DONE: bytes = b"data: [DONE]\n\n"


def encode_data(payload: bytes) -> bytes:
    """One SSE event carrying `payload` (compact JSON, so it holds no line break) as its data."""
    return b"data: " + payload + b"\n\n"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str | None  # None when the event had no (or an empty) `event` field, i.e. the default "message" type
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream, chunked in any way, into events. One decoder per stream.

    `feed` returns whole `ServerSentEvent`s; `feed_data` returns only each event's data, as UTF-8 bytes (what a JSON
    parser takes), for a caller that needs nothing else: the relay, once per network read. Both parse the same way;
    fields stay bytes until an event is dispatched."""

    __slots__ = ("_bom_checked", "_buf", "_data", "_event", "_last_id", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._bom_checked = False
        self._skip_lf = False  # the previous chunk ended with CR: a LF at the start of the next one ends no line
        self._data: list[bytes] = []
        self._event: bytes = b""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete (often none)."""
        out: list[ServerSentEvent] = []
        self._lines(chunk, out, None)
        return out

    def feed_data(self, chunk: bytes, skip: bytes | None = None) -> list[bytes]:
        """Add bytes; return the data of the events they complete, except of events of type `skip` (e.g. b"ping")."""
        if (
            chunk[-2:] == b"\n\n"
            and chunk[:7] == b"event: "
            and self._bom_checked
            and not self._buf
            and not self._data
            and not self._skip_lf
        ):
            # The usual read: one whole event, an `event` line and a `data` line, nothing pending before it.
            nl = chunk.find(b"\n")
            if (
                chunk.find(b"\n", nl + 1) == len(chunk) - 2
                and chunk[nl + 1 : nl + 7] == b"data: "
                and chunk.find(b"\r") < 0
            ):
                self._event, self._retry = b"", None
                return [] if chunk[7:nl] == skip else [chunk[nl + 7 : -2]]
        out: list[bytes] = []
        self._lines(chunk, None, out, skip)
        return out

    def _lines(
        self,
        chunk: bytes,
        events: list[ServerSentEvent] | None,
        datas: list[bytes] | None,
        skip: bytes | None = None,
    ) -> None:
        if not chunk:
            return
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._bom_checked:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return
            self._bom_checked = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        # bytes.find, not `in`: `in` first tries its operand as an integer, which costs an exception each time.
        if buf.find(b"\r") >= 0:
            if buf.endswith(b"\r"):
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if buf.find(b"\n") < 0:
            self._buf = buf
            return
        *lines, self._buf = buf.split(b"\n")
        data = self._data
        for line in lines:
            if not line:
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    if datas is not None:
                        if skip is None or self._event != skip:
                            datas.append(payload)
                    elif events is not None:
                        events.append(
                            ServerSentEvent(
                                self._event.decode("utf-8", "replace") or None,
                                payload.decode("utf-8", "replace"),
                                self._last_id,
                                self._retry,
                            )
                        )
                    data = self._data = []
                self._event = b""
                self._retry = None
            elif line[:6] == b"data: ":
                data.append(line[6:])
            elif line[:7] == b"event: ":
                self._event = line[7:]
            elif line[0] != 0x3A:  # not a ":" comment
                self._field(line)

    def flush(self) -> None:
        """The stream ended: every complete event was already returned by `feed`; a partial one is dropped."""
        self._buf = b""
        self._data = []
        self._event = b""
        self._retry = None
        self._skip_lf = False

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if value.find(b"\0") < 0:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():  # bytes.isdigit is ASCII digits only
            self._retry = int(value)
