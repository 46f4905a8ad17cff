"""A minimal keep-alive HTTP/1.1 client for the benchmark: one connection, one request at a time, timed.

It reads Content-Length and chunked bodies incrementally and, while reading, notes when the first text token of
the lean upstream (`tk_…`) arrives and how many arrive, whether the body was an event stream sent directly by the
upstream or relayed as `chat.completion.chunk`s by the proxy. It does as little as possible per read, so that both
sides of every comparison pay the same small client cost.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

TOKEN = b"tk_"
STAMP = re.compile(rb"tk_\d+@(\d+) ")  # a paced delta: tk_<n>@<CLOCK_MONOTONIC ns when the upstream wrote it>
_HEAD, _LENGTH, _SIZE, _DATA, _TRAILER = range(5)


@dataclass
class Result:
    status: int = 0
    start: float = 0.0
    first: float | None = None  # when the first text token arrived
    end: float = 0.0
    tokens: int = 0
    finished: bool = False  # the body ended the way a complete answer ends ([DONE], message_stop, or a JSON body)
    error_line: bool = False  # the body carried an error (an SSE error line or an error event)
    lags: list[float] | None = None  # seconds from each stamped token's writing upstream to its arrival here
    arrived: list[float] | None = None  # when each of `lags` arrived (perf_counter), one for one

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.finished and not self.error_line

    @property
    def ttft(self) -> float:
        return (self.first if self.first is not None else self.end) - self.start

    @property
    def total(self) -> float:
        return self.end - self.start


class Connection(asyncio.Protocol):
    def __init__(self, stamps: bool = False) -> None:
        self.stamps = stamps
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.result = Result()
        self.done: asyncio.Future[Result] | None = None
        self.first_token: asyncio.Future[None] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, stamps: bool = False) -> Connection:
        _, conn = await asyncio.get_running_loop().create_connection(lambda: cls(stamps), host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed before the response ended"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> Result:
        if self.closed or self.transport is None:
            raise ConnectionError("connection is closed")
        loop = asyncio.get_running_loop()
        self.result = Result(
            start=time.perf_counter(), lags=[] if self.stamps else None, arrived=[] if self.stamps else None
        )
        self.state = _HEAD
        self.done = loop.create_future()
        self.first_token = loop.create_future()
        self.transport.write(raw)
        return await self.done

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        while True:
            if self.state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                self.result.status = int(head[9:12])
                if head.find(b"\r\ntransfer-encoding: chunked") >= 0:
                    self.state = _SIZE
                else:
                    at = head.find(b"\r\ncontent-length:")
                    stop = head.find(b"\r\n", at + 2)
                    self.remaining = int(head[at + 17 : stop if stop >= 0 else len(head)]) if at >= 0 else 0
                    self.state = _LENGTH
            elif self.state == _LENGTH:
                if len(buf) < self.remaining:
                    return
                body = bytes(buf[: self.remaining])
                del buf[: self.remaining]
                self._body(body)
                self.result.finished = self.result.finished or body[:1] == b"{"
                self._complete()
                return
            elif self.state == _SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                self.remaining = int(bytes(buf[:end]).split(b";")[0], 16)
                del buf[: end + 2]
                self.state = _DATA if self.remaining else _TRAILER
            elif self.state == _DATA:
                if len(buf) < self.remaining + 2:
                    return
                self._body(bytes(buf[: self.remaining]))
                del buf[: self.remaining + 2]
                self.state = _SIZE
            else:  # trailer section: lines up to an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._complete()
                    return

    def _body(self, data: bytes) -> None:
        result = self.result
        count = data.count(TOKEN)
        if count:
            if result.first is None:
                result.first = time.perf_counter()
                if self.first_token is not None and not self.first_token.done():
                    self.first_token.set_result(None)
            result.tokens += count
            if result.lags is not None and result.arrived is not None:
                now = time.monotonic_ns()
                lags = [(now - int(sent)) / 1e9 for sent in STAMP.findall(data)]
                result.lags += lags
                result.arrived += [time.perf_counter()] * len(lags)
        # find, not `in`: on bytes, `in` first tries its operand as an integer and pays for an exception each time.
        if data.find(b"data: [DONE]") >= 0 or data.find(b'"message_stop"') >= 0:
            result.finished = True
        if data.find(b'data: {"error"') >= 0 or data.find(b"event: error") >= 0:
            result.error_line = True

    def _complete(self) -> None:
        self.result.end = time.perf_counter()
        self.state = _HEAD
        if self.done is not None and not self.done.done():
            self.done.set_result(self.result)


def post(host: str, port: int, path: str, body: bytes, extra: str = "") -> bytes:
    """A raw POST request with a JSON body, kept alive."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode()
