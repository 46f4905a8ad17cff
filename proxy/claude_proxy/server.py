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
import logging
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from claude_proxy.config import Settings
from claude_proxy.limits import Drain
from claude_proxy.logs import logging_config

log = logging.getLogger("claude_proxy.server")

# Time between the grace period's end and uvicorn cancelling what is left: room for the error lines to go out.
HARD_STOP_MARGIN = 3.0

_TIMEOUT_BODY = b'{"error":{"message":"request headers not received in time","type":"invalid_request_error"}}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


def header_timeout_protocol(timeout: float, base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, with a deadline for each request head."""
    if base is None:
        base = import_from_string(HTTP_PROTOCOLS["auto"])
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

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.drain.draining:
            log.info("signal %d: draining, in-flight requests get %g s", sig, self.drain.grace)
        self.drain.begin()
        super().handle_exit(sig, frame)


def build_server(
    app: FastAPI, settings: Settings, host: str, port: int, *, configure_logging: bool = True
) -> ProxyServer:
    """The server `claude-proxy serve` runs; `configure_logging=False` leaves the process's logging alone (tests)."""
    drain: Drain = app.state.drain
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_timeout_protocol(settings.header_timeout),
        log_config=logging_config(settings.log_level, settings.log_format) if configure_logging else None,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=max(1, round(settings.keepalive_timeout)),
        timeout_graceful_shutdown=round(drain.grace + HARD_STOP_MARGIN),
    )
    return ProxyServer(config, drain)
