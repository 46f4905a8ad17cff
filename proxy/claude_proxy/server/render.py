"""Answers written by the proxy itself: JSON bodies and OpenAI's error envelope, and what an error leaves on the
access line."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

from claude_proxy.errors import ProxyError, UpstreamError
from claude_proxy.server.access import RequestInfo

log = logging.getLogger("claude_proxy")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ProxyError) -> Response:
    return json_response(exc.envelope(), exc.status, exc.headers)


async def send_json(send: Send, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
    """A JSON response straight onto the ASGI channel: what `json_response` does, without a Response object."""
    body = orjson.dumps(payload)
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if headers:
        head += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def note_error(exc: ProxyError, info: RequestInfo | None, method: str, path: str) -> None:
    """What an error about to be answered leaves on the request's access line; a 5xx is logged too."""
    if info is not None:
        info.error = exc.code or exc.type
        if isinstance(exc, UpstreamError) and exc.request_id:
            info.upstream_request_id = exc.request_id
    if exc.status >= 500:
        log.warning("%s %s -> %d %s", method, path, exc.status, exc.type)
