"""The observing edge: an ASGI middleware that gives every request an id, returns it as `x-request-id`, and when
the response is over (the whole stream, for streams) records the request metrics and writes one access log line.

Route handlers add what they learn to `request.state.info` (a `RequestInfo`): the model, Anthropic's request id,
token counts, the error type. The app runs every HTTP request through this middleware before its router, so it
also answers (and counts) an exception nothing turned into a response, with a 500 envelope that says it is the
proxy's own fault; an exception that Starlette's error layer already answered is only logged and counted here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claude_proxy.config import Settings
from claude_proxy.convert.tables import tokens
from claude_proxy.server.limits import BodyHold
from claude_proxy.server.logs import ACCESS_LOGGER, clip, direct_access_handler
from claude_proxy.server.metrics import Metrics
from claude_proxy.server.streaming import SEND_STALLED

log = logging.getLogger("claude_proxy")
access_log = logging.getLogger(ACCESS_LOGGER)

UNMATCHED = "unmatched"
DEFAULT_FIELD_CHARS: int = Settings.model_fields["log_field_chars"].default


class RequestInfo:
    __slots__ = (
        "body",
        "cache_read_tokens",
        "cache_write_tokens",
        "error",
        "finish_reason",
        "first_token",
        "input_tokens",
        "model",
        "output_tokens",
        "request_id",
        "response_model",
        "status",
        "stream",
        "tpot",
        "upstream_request_id",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.status = 0
        self.model: str | None = None
        self.stream: bool | None = None
        self.upstream_request_id: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.error: str | None = None
        # For the telemetry: Anthropic's stop reason and model, and a stream's time to first token and per token.
        self.finish_reason: str | None = None
        self.response_model: str | None = None
        self.first_token: float | None = None
        self.tpot: float | None = None
        self.body: BodyHold | None = None  # the request body's share of the body budget, given back at the end

    def release(self) -> None:
        """Give back what the request held of the body budget (the access edge calls this when the request ends)."""
        if self.body is not None:
            self.body.release()

    def add_usage(self, usage: Mapping[str, Any] | None) -> None:
        if not usage:
            return
        counts = tokens(usage)
        self.input_tokens += counts.input
        self.output_tokens += counts.output
        self.cache_read_tokens += counts.cache_read
        self.cache_write_tokens += counts.cache_write


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def _field_chars(scope: Scope) -> int:
    """PROXY_LOG_FIELD_CHARS, from the app's state (the lifespan's; the default before it ran)."""
    state = scope.get("state", {}).get("app")
    return state.settings.log_field_chars if state is not None else DEFAULT_FIELD_CHARS


INTERNAL_ERROR = orjson.dumps(
    {"error": {"message": "internal error in the proxy", "type": "server_error", "param": None, "code": None}}
)


class Tracing(Protocol):
    """The OpenTelemetry hooks (`server.telemetry.Telemetry`), given only when telemetry is configured."""

    def start(self, scope: Scope, info: RequestInfo) -> Any: ...

    def finish(self, trace: Any, info: RequestInfo, route: str, status: int, seconds: float) -> None: ...


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, telemetry: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info = RequestInfo(new_request_id())
        scope.setdefault("state", {})["info"] = info
        trace = self.telemetry.start(scope, info) if self.telemetry is not None else None
        header = (b"x-request-id", info.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            path = clip(scope["path"], _field_chars(scope))
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], path, exc_info=exc)
            info.error = info.error or "server_error"
            if info.status:  # the response had begun: nothing more can be said to this client
                return
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(INTERNAL_ERROR)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": INTERNAL_ERROR})
        finally:
            info.release()
            self._record(scope, info, time.perf_counter() - started, trace)

    def _record(self, scope: Scope, info: RequestInfo, seconds: float, trace: Any = None) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or UNMATCHED
        if scope.get(SEND_STALLED):  # the server dropped a client that stopped reading its answer
            info.error = "client_stalled"
            self.metrics.rejected.labels("send_timeout").inc()
        self.metrics.request(path, info.status or 499, info.model, seconds)
        if self.telemetry is not None:
            self.telemetry.finish(trace, info, path, info.status or 499, seconds)
        if info.status == 499 and path != UNMATCHED:
            self.metrics.disconnects.inc()
        direct = direct_access_handler(access_log)
        if direct is None and not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        chars = _field_chars(scope)
        fields = {
            "request_id": info.request_id,
            "method": clip(scope["method"], chars),
            "path": clip(scope["path"], chars),
            "route": path,
            "status": info.status or 499,
            "duration_ms": round(seconds * 1000, 1),
            "model": clip(info.model, chars),
            "stream": info.stream,
            "upstream_request_id": clip(info.upstream_request_id, chars),
            "input_tokens": info.input_tokens,
            "output_tokens": info.output_tokens,
            "cache_read_tokens": info.cache_read_tokens,
            "cache_write_tokens": info.cache_write_tokens,
            "error": info.error,
            "client": client[0] if client else None,
        }
        if direct is not None:  # the proxy's own handler: the line without a LogRecord, several times cheaper
            direct.emit_line(direct.formatter.format_access(time.time(), fields))  # type: ignore[union-attr]
        else:
            access_log.info("request", extra={"access": fields})
