"""Running the app under uvicorn: bounds on what a connection may send before the app sees a request, and the
SIGTERM drain.

uvicorn closes idle keep-alive connections (`PROXY_KEEPALIVE_TIMEOUT`) but bounds neither the time nor the size of a
request head, nor the number of connections. `guarded_protocol` wraps its httptools protocol so that:

- a connection that has not sent a complete request head within `PROXY_HEADER_TIMEOUT` seconds (from connecting, or
  from the first byte of a next request) gets a 408 and is closed;
- a head is fed to the parser at most `PROXY_MAX_HEADER_BYTES` at a time, and one longer than that, or with more than
  `PROXY_MAX_HEADERS` header lines, gets a 431 as soon as the limit is passed (while the rest is still arriving,
  never held), then the connection is closed: the client gets `LINGER` seconds to read the answer, whatever it sends
  meanwhile dropped unread, and no more than `LINGER_BYTES` of it;
- beyond `PROXY_MAX_CONNECTIONS` open connections a new one gets a 503 and is closed at once;
- a client that stops reading is dropped: once the answer's writes back up (the kernel's buffers are full and the
  transport's own has passed its high-water mark, which is when the app's `send` starts to wait), the client has
  `PROXY_SEND_TIMEOUT` seconds to read enough to bring it below the low-water mark. Otherwise the connection is
  aborted (what is buffered for it dropped), the request's scope marked `SEND_STALLED` and the app sees the client
  gone: a stream closes its upstream request and frees its slot. This costs nothing per write: only the transport's
  pause and resume touch the timer.

The request body's own deadline is the app's (`PROXY_BODY_TIMEOUT`).

On SIGTERM `ProxyServer` marks the app as draining before uvicorn stops accepting: `/readyz` answers 503 at once, the
requests in flight get `PROXY_SHUTDOWN_GRACE` seconds, then streams are ended with an error line and waits with a
503. uvicorn's own hard limit is set a few seconds later, so those last lines are written before it cancels anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from claude_proxy.config import Settings
from claude_proxy.errors import ProxyError
from claude_proxy.server.limits import Drain, HeadTooLarge, RequestTimeout
from claude_proxy.server.logs import flush_batched, logging_config
from claude_proxy.server.streaming import SEND_STALLED

log = logging.getLogger("claude_proxy.server")

# Time between the grace period's end and uvicorn cancelling what is left: room for the error lines to go out.
HARD_STOP_MARGIN = 3.0
# A refused head's client has this long to read the 431 before its connection is dropped, as long as it sends no more
# than LINGER_BYTES meanwhile.
LINGER = 2.0
LINGER_BYTES = 1024 * 1024


def _answer(status: str, error: ProxyError, *extra: bytes) -> bytes:
    """A whole HTTP/1.1 answer, in the same envelope as every other error, written by the protocol itself: no request
    reached the app."""
    body = orjson.dumps(error.envelope())
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + b"".join(extra)
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


REQUEST_TIMEOUT = _answer(
    "408 Request Timeout",
    RequestTimeout("request headers not received in time (PROXY_HEADER_TIMEOUT)", code="request_timeout"),
)


def head_too_large(what: str) -> bytes:
    return _answer(
        "431 Request Header Fields Too Large", HeadTooLarge(f"request head too large: {what}", code="header_too_large")
    )


def too_many_connections(limit: int) -> bytes:
    error = ProxyError(
        f"the proxy has {limit} connections open (PROXY_MAX_CONNECTIONS); retry later",
        status=503,
        type="server_error",
        code="too_many_connections",
    )
    return _answer("503 Service Unavailable", error, b"retry-after: 1\r\n")


class _TooManyHeaders(Exception):
    pass


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head bounds, the connection cap and the send deadline;
    `guarded_protocol` sets the limits."""

    head_timeout = 10.0
    max_head_bytes = 32768
    max_headers = 100
    max_connections = 1000
    send_timeout = 30.0

    _head_timer: asyncio.TimerHandle | None = None
    _seen_cycle: Any = None
    _head_bytes = 0  # bytes of the current request head fed to the parser so far
    _headers = 0  # header lines of the current request head
    _in_body = False  # between a head's end and its message's end: what comes is body, not head
    _refused: bytes | None = None  # the 431 to send (the header count ran over inside the parser)
    _discarding = False  # a 431 went out: what the client still sends is dropped
    _discarded = 0
    _linger: asyncio.TimerHandle | None = None
    _stall_timer: asyncio.TimerHandle | None = None  # runs while the transport's writes are paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._discarding = True
            self.transport.write(too_many_connections(self.max_connections))
            self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES and not self.transport.is_closing():
                self.transport.close()
            return
        while data:
            if self._in_body:
                piece, data = data, b""
            else:
                room = self.max_head_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(head_too_large(f"more than {self.max_head_bytes} bytes (PROXY_MAX_HEADER_BYTES)"))
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            super().data_received(piece)
            if self._discarding or self.transport.is_closing():
                return
        cycle = self.cycle
        if cycle is not self._seen_cycle:  # a request head was complete
            self._seen_cycle = cycle
            self._disarm()
        elif self._head_timer is None and (cycle is None or cycle.response_complete):
            self._arm()  # the first bytes of a next request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.max_headers:
            self._refused = head_too_large(f"more than {self.max_headers} header lines (PROXY_MAX_HEADERS)")
            raise _TooManyHeaders  # stops the parser; uvicorn answers a parser error with send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_body, self._head_bytes = True, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused is not None:
            self._refuse(self._refused)
        else:
            super().send_400_response(msg)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.scope[SEND_STALLED] = True  # type: ignore[literal-required]
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "%s read nothing of its answer for %g s (PROXY_SEND_TIMEOUT): connection dropped", client, self.send_timeout
        )
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for timer in (self._linger, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._linger = self._stall_timer = None
        super().connection_lost(exc)

    def _refuse(self, answer: bytes) -> None:
        """Answer, then drop whatever else comes for `LINGER` seconds (so the client reads the answer rather than a
        reset), then close."""
        self._disarm()
        self._discarding = True
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # a pipelined head: an answer is being written
            cycle.keep_alive = False  # that answer ends the connection, with no other written into it
            return
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        self._linger = self.loop.call_later(LINGER, transport.close)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        if cycle is not self._seen_cycle or (cycle is not None and not cycle.response_complete):
            return  # a request is being served after all
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._discarding:
            transport.write(REQUEST_TIMEOUT)
            transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class for these settings' limits."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "head_timeout": settings.header_timeout,
            "max_head_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "max_connections": settings.max_connections,
            "send_timeout": settings.send_timeout,
        },
    )


class ProxyServer(uvicorn.Server):
    """uvicorn's server, telling the app's Drain about SIGTERM/SIGINT before it stops accepting."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the stop signal when this context ends, which ends the process there and then: the log
        # lines gathered in the event loop's last turn must be written before that.
        # A second Ctrl-C has done its part once uvicorn stopped waiting for in-flight requests: re-raising it as
        # well would raise KeyboardInterrupt inside the event loop, so each signal is re-raised once. The requests
        # and the lifespan such a forced stop leaves behind are cancelled as the loop closes; their CancelledError
        # is the stop itself, not a fault, and is not logged as one.
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals[:] = list(dict.fromkeys(self._captured_signals))
                if self.force_exit:
                    logging.getLogger("uvicorn.error").addFilter(_not_a_forced_stop)
                flush_batched()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.drain.draining:
            log.info("signal %d: draining, in-flight requests get %g s", sig, self.drain.grace)
        elif sig == signal.SIGINT and not self.force_exit:
            log.info("second interrupt: stopping now, without waiting for the requests in flight")
        self.drain.begin()
        super().handle_exit(sig, frame)


def _not_a_forced_stop(record: logging.LogRecord) -> bool:
    """False for uvicorn's report of a task cancelled by a forced stop as the event loop closes: a request's (with
    the exception attached) or the lifespan's (its traceback as the message, as Starlette hands it over)."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError | KeyboardInterrupt):
        return False
    return not record.getMessage().rstrip().endswith("CancelledError")


def build_server(
    app: Starlette, settings: Settings, host: str, port: int, *, configure_logging: bool = True
) -> ProxyServer:
    """The server `claude-proxy serve` runs; `configure_logging=False` leaves the process's logging alone (tests)."""
    drain: Drain = app.state.drain
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings),  # on uvloop when installed
        log_config=logging_config(settings.log_level, settings.log_format) if configure_logging else None,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=max(1, round(settings.keepalive_timeout)),
        timeout_graceful_shutdown=round(drain.grace + HARD_STOP_MARGIN),
    )
    return ProxyServer(config, drain)


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind too (SO_REUSEPORT): the kernel spreads connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def run_workers(workers: int, host: str, port: int, extra: list[str]) -> int:
    """`serve --workers N`: N `serve` processes, each a complete server on the same port, supervised here.

    SIGTERM and SIGINT are passed on (each worker drains as a single server does) and the exit waits for all of them.
    A worker that exits on its own takes the others down with it, so the whole process exits and is restarted by
    whatever runs it, instead of serving on silently with fewer workers."""
    command = [sys.executable, "-m", "claude_proxy", "serve", "--host", host, "--port", str(port), "--reuse-port"]
    children = [subprocess.Popen([*command, *extra]) for _ in range(workers)]
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        # Always SIGTERM: a terminal's Ctrl-C has already sent SIGINT to the workers, and a second SIGINT would
        # make uvicorn skip the drain.
        stopping.append(sig)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        if not stopping:
            log.error("a worker exited; stopping the others")
            forward(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    # uvicorn re-raises the stop signal once drained, so a worker that stopped as asked ends by SIGTERM.
    stopped = (0, -signal.SIGTERM, -signal.SIGINT) if stopping else (0,)
    return 0 if all(code in stopped for code in codes) else 1
