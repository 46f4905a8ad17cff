"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's own API, passed through with the proxy's credential.

Anthropic-native clients (the anthropic SDKs, tools configured with a base URL) share the login the proxy keeps:
the body goes upstream unchanged, with the proxy's credential (`Upstream` builds the auth headers: x-api-key, or
the OAuth bearer with the OAuth beta merged into the client's `anthropic-beta`) and the client's
`anthropic-version`. Nothing else the client sent is forwarded: not its x-api-key or Authorization (those carry one
of the proxy's own inbound keys), no cookies, no hop-by-hop headers. The answer comes back with its status and body
unchanged; a stream is relayed chunk by chunk as it arrives.

The same machinery as chat completions: the concurrency limit, the disconnect watch and shutdown drain, the one
stream relay (passing Anthropic's bytes through, the usage read as they pass), retries before the first byte (HTTP
429/529/5xx answers, a broken connection, a stream whose first event is a retryable `error`: one loop, one budget),
the access line and the metrics. Errors the proxy itself answers use Anthropic's error envelope,
since the clients of these routes read that shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response as Answer
from starlette.types import Receive, Scope, Send
from yarl import URL

from claude_proxy.convert.anthropic import CountTokensRequest, MessagesRequest, StreamWatch
from claude_proxy.convert.tables import ANTHROPIC_TYPES
from claude_proxy.errors import ProxyError, UpstreamError
from claude_proxy.retry import RetryBudget
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.body import RawBody
from claude_proxy.server.inbound import RequestHeaders, anthropic_key, request_headers
from claude_proxy.server.render import SelfWritten, json_response, note_error
from claude_proxy.server.routing import STREAMABLE, ProxyRoute
from claude_proxy.server.state import AppState, UpstreamSlot, app_state, relay_stream, request_info
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.api import ANTHROPIC_VERSION as DEFAULT_VERSION
from claude_proxy.upstream.ratelimits import PREFIX as RATELIMIT_PREFIX
from claude_proxy.upstream.relay import Shape, StreamRelay

# Response headers relayed to the client besides the rate-limit ones; the rest (connection, server, cookies, …) stay.
RELAYED = frozenset({"content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry"})


def anthropic_status(exc: ProxyError) -> int:
    """The status of a proxy error on these routes: Anthropic's own for its errors (529 stays 529), the proxy's for
    a refusal of its credential (said its way on every route)."""
    if isinstance(exc, UpstreamError) and not exc.credential_refused:
        return exc.upstream_status
    return exc.status


def anthropic_envelope(exc: ProxyError) -> dict[str, Any]:
    """A proxy error in Anthropic's shape: {"type": "error", "error": {"type", "message"}}."""
    if isinstance(exc, UpstreamError) and exc.credential_refused:
        etype = "permission_error"
    elif isinstance(exc, UpstreamError) and exc.upstream_type:
        etype = exc.upstream_type
    else:
        etype = ANTHROPIC_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": exc.message}}


def error_event(exc: ProxyError) -> bytes:
    """A proxy error as the `error` event that ends an Anthropic stream."""
    return b"event: error\ndata: " + orjson.dumps(anthropic_envelope(exc)) + b"\n\n"


def relayed_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in headers.items():
        lower = name.lower()
        if lower in RELAYED or lower.startswith(RATELIMIT_PREFIX):
            out.append((lower.encode("latin-1"), value.encode("latin-1")))
    return out


class AnthropicRoute(ProxyRoute):
    """These routes' errors raised before the answer began, in Anthropic's envelope (their clients read that shape)."""

    def error_response(self, exc: ProxyError) -> Answer:
        return json_response(anthropic_envelope(exc), anthropic_status(exc), exc.headers)


router = APIRouter(route_class=AnthropicRoute, dependencies=[Depends(anthropic_key)])


@router.post(
    "/v1/messages",
    summary="Messages",
    description="Anthropic's Messages API, passed through with the proxy's credential.",
    responses=STREAMABLE,
)
async def messages(
    request: Request,
    headers: Annotated[RequestHeaders, Depends(request_headers)],
    raw: Annotated[bytes, Depends(RawBody(MessagesRequest))],
) -> Answer:
    return SelfWritten(partial(_answering, app_state(request), request_info(request), headers, raw, False))


@router.post(
    "/v1/messages/count_tokens",
    summary="Count tokens",
    description="Anthropic's token counting, passed through with the proxy's credential.",
)
async def count_tokens(
    request: Request,
    headers: Annotated[RequestHeaders, Depends(request_headers)],
    raw: Annotated[bytes, Depends(RawBody(CountTokensRequest))],
) -> Answer:
    return SelfWritten(partial(_answering, app_state(request), request_info(request), headers, raw, True))


async def _answering(
    edge: AppState,
    info: RequestInfo,
    headers: RequestHeaders,
    raw: bytes,
    count_tokens: bool,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """The passthrough, its own errors answered in Anthropic's envelope (these routes' clients read that shape)."""
    try:
        await _passthrough(scope, receive, send, edge, info, count_tokens, raw, headers)
    except ProxyError as exc:
        if info.status:  # the response had begun: nothing more can be said to this client
            raise
        note_error(exc, info, scope["method"], scope["path"])
        body = orjson.dumps(anthropic_envelope(exc))
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": anthropic_status(exc), "headers": head})
        await send({"type": "http.response.body", "body": body})


async def _passthrough(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: AppState,
    info: RequestInfo,
    count_tokens: bool,
    raw: bytes,
    headers: RequestHeaders,
) -> None:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None  # forwarded all the same: Anthropic's own answer says what is wrong with it
    model = payload.get("model") if isinstance(payload, dict) else None
    stream = bool(payload.get("stream")) if isinstance(payload, dict) and not count_tokens else False
    info.model = model if isinstance(model, str) else None
    info.stream = stream
    upstream = edge.upstream
    url = upstream.count_tokens_url if count_tokens else upstream.messages_url
    client_betas = ",".join(headers.betas) or None
    version = headers.anthropic_version or DEFAULT_VERSION
    budget = RetryBudget()
    started = time.perf_counter()
    async with UpstreamSlot(edge, receive, info) as turn:
        if stream:
            await _stream(scope, receive, send, edge, turn, raw, client_betas, url, version, started)
            return
        reply = await until_disconnect(
            receive,
            lambda: upstream.send_with_retries(
                raw, client_betas, stream=False, budget=budget, url=url, version=version, relay_errors=True
            ),
            edge.drain,
        )
        info.upstream_request_id = reply.headers.get("request-id")
        content = reply.content or b""
        if reply.status_code < 300 and not count_tokens:
            try:
                message = orjson.loads(content)
            except orjson.JSONDecodeError:
                message = None
            turn.answered(message)
        await _answer(send, reply.status_code, reply.headers, content, budget)


async def _answer(send: Send, status: int, headers: Mapping[str, str], content: bytes, budget: RetryBudget) -> None:
    head = relayed_headers(headers)
    if status >= 400 and budget.retries:
        head = [(k, v) for k, v in head if k != b"x-should-retry"]
        head.append((b"x-should-retry", b"false"))  # the proxy already retried (no retry amplification)
    head.append((b"content-length", b"%d" % len(content)))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": content})


async def _stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: AppState,
    turn: UpstreamSlot,
    raw: bytes,
    client_betas: str | None,
    url: URL,
    version: str,
    started: float,
) -> None:
    """Anthropic's event stream, relayed as it comes (the one stream relay, passing through), or its error answer."""
    relay = StreamRelay(
        edge.upstream,
        raw,
        client_betas,
        Shape(StreamWatch, done=b"", fail=_stream_error, passthrough=True),
        idle_timeout=edge.settings.stream_idle_timeout,
        url=url,
        version=version,
    )
    stream = await relay_stream(receive, edge, turn, relay, started, headers=_stream_headers)
    if stream is not None:
        await stream(scope, receive, send)
        return
    assert relay.response is not None  # refused: Anthropic's own error answer, relayed as it came
    response = relay.response
    await _answer(send, response.status_code, response.headers, response.content or b"", relay.budget)


def _stream_error(watch: StreamWatch, exc: ProxyError) -> bytes:
    return error_event(exc)


def _stream_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Anthropic's headers for the stream's response (its content type is the stream response's own)."""
    return [(k, v) for k, v in relayed_headers(headers) if k != b"content-type"]
