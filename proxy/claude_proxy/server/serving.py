"""Running the app under uvicorn: timeouts for slow clients and the SIGTERM drain.

uvicorn closes idle keep-alive connections (`PROXY_KEEPALIVE_TIMEOUT`) but waits forever for the headers of a
request; `header_timeout_protocol` wraps its HTTP protocol so a connection that has not sent a complete request head
within `PROXY_HEADER_TIMEOUT` seconds (from connecting, or from the first byte of a next request) gets a 408 and is
closed. The request body's own timeout is the app's (`PROXY_BODY_TIMEOUT`).

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
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from claude_proxy.config import Settings
from claude_proxy.server.limits import Drain, RequestTimeout
from claude_proxy.server.logs import flush_batched, logging_config

log = logging.getLogger("claude_proxy.server")

# Time between the grace period's end and uvicorn cancelling what is left: room for the error lines to go out.
HARD_STOP_MARGIN = 3.0

# The same envelope as every other error (the app's RequestTimeout), written by the protocol itself: no request
# reached the app.
_TIMEOUT_BODY = orjson.dumps(
    RequestTimeout("request headers not received in time (PROXY_HEADER_TIMEOUT)", code="request_timeout").envelope()
)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


def header_timeout_protocol(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (its own choice: httptools when installed), with a deadline for each request
    head."""
    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["auto"])
    parent: Any = base

    class HeaderTimeoutProtocol(parent):
        _head_timer: asyncio.TimerHandle | None = None
        _seen_cycle: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = getattr(self, "cycle", None)
            if cycle is not self._seen_cycle:  # a request head was complete
                self._seen_cycle = cycle
                self._disarm()
            elif self._head_timer is None and (cycle is None or cycle.response_complete):
                self._arm()  # the first bytes of a next request

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            cycle = getattr(self, "cycle", None)
            if cycle is not self._seen_cycle or (cycle is not None and not cycle.response_complete):
                return  # a request is being served after all
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(REQUEST_TIMEOUT)
                transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


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
        http=header_timeout_protocol(settings.header_timeout),  # on uvloop and httptools when installed
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
