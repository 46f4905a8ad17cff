"""Answers written by the proxy itself: JSON bodies and OpenAI's error envelope, and what an error leaves on the
access line."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from claude_proxy.errors import ProxyError, UpstreamError
from claude_proxy.server.access import DEFAULT_FIELD_CHARS, RequestInfo
from claude_proxy.server.logs import clip

log = logging.getLogger("claude_proxy")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ProxyError) -> Response:
    return json_response(exc.envelope(), exc.status, exc.headers)


class SelfWritten(Response):
    """A response its route writes itself onto the ASGI channel: `write(scope, receive, send)`."""

    def __init__(self, write: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.write = write
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.write(scope, receive, send)


def note_error(exc: ProxyError, info: RequestInfo | None, method: str, path: str) -> None:
    """What an error about to be answered leaves on the request's access line; a 5xx is logged too."""
    if info is not None:
        info.error = exc.code or exc.type
        if isinstance(exc, UpstreamError) and exc.request_id:
            info.upstream_request_id = exc.request_id
    if exc.status >= 500:
        log.warning("%s %s -> %d %s", method, clip(path, DEFAULT_FIELD_CHARS), exc.status, exc.type)
