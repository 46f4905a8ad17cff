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
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send
from yarl import URL

from claude_proxy.convert.anthropic import StreamWatch
from claude_proxy.convert.tables import ANTHROPIC_TYPES
from claude_proxy.errors import ProxyError, UpstreamError
from claude_proxy.retry import RetryBudget
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.limits import read_body
from claude_proxy.server.render import note_error
from claude_proxy.server.state import Edge, Turn, bearer, edge_of, info_of, relay_stream
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.api import ANTHROPIC_VERSION as DEFAULT_VERSION
from claude_proxy.upstream.ratelimits import PREFIX as RATELIMIT_PREFIX
from claude_proxy.upstream.relay import Shape, StreamRelay

# Response headers relayed to the client besides the rate-limit ones; the rest (connection, server, cookies, …) stay.
RELAYED = frozenset({"content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry"})


def anthropic_envelope(exc: ProxyError) -> dict[str, Any]:
    """A proxy error in Anthropic's shape: {"type": "error", "error": {"type", "message"}}."""
    if isinstance(exc, UpstreamError) and exc.upstream_type:
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


def _check_key(edge: Edge, api_key: bytes | None, authorization: bytes | None) -> None:
    """The inbound key, as Anthropic's clients send it (`x-api-key`), or as a bearer token."""
    if edge.inbound:
        presented = api_key.strip() if api_key else bearer(authorization)
        edge.check_key(presented, "send x-api-key: <one of PROXY_API_KEYS> (or Authorization: Bearer)")


async def messages(scope: Scope, receive: Receive, send: Send) -> None:
    """Messages: Anthropic's Messages API, passed through with the proxy's credential."""
    await _answering(scope, receive, send, count_tokens=False)


async def count_tokens(scope: Scope, receive: Receive, send: Send) -> None:
    """Count tokens: Anthropic's token counting, passed through with the proxy's credential."""
    await _answering(scope, receive, send, count_tokens=True)


async def _answering(scope: Scope, receive: Receive, send: Send, count_tokens: bool) -> None:
    """The passthrough, its own errors answered in Anthropic's envelope (these routes' clients read that shape)."""
    info = info_of(scope)
    try:
        await _passthrough(scope, receive, send, edge_of(scope), info, count_tokens)
    except ProxyError as exc:
        if info.status:  # the response had begun: nothing more can be said to this client
            raise
        note_error(exc, info, scope["method"], scope["path"])
        body = orjson.dumps(anthropic_envelope(exc))
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": head})
        await send({"type": "http.response.body", "body": body})


async def _passthrough(
    scope: Scope, receive: Receive, send: Send, edge: Edge, info: RequestInfo, count_tokens: bool
) -> None:
    api_key = authorization = length = version = None
    betas: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization":
            authorization = value
        elif name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"anthropic-version":
            version = value.decode("latin-1").strip()
        elif name == b"anthropic-beta":
            betas.append(value.decode("latin-1"))
    _check_key(edge, api_key, authorization)
    settings = edge.settings
    raw = await read_body(receive, length, settings.max_body_bytes, settings.body_timeout)
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
    client_betas = ",".join(betas) or None
    version = version or DEFAULT_VERSION
    budget = RetryBudget()
    started = time.perf_counter()
    async with Turn(edge, receive, info) as turn:
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
            counts = message.get("usage") if isinstance(message, dict) else None
            turn.usage = counts if isinstance(counts, dict) else None
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
    edge: Edge,
    turn: Turn,
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
    await relay_stream(scope, receive, send, edge, turn, relay, started, headers=_stream_headers)
    if relay.refused:
        assert relay.response is not None
        response = relay.response
        await _answer(send, response.status_code, response.headers, response.content or b"", relay.budget)


def _stream_error(watch: StreamWatch, exc: ProxyError) -> bytes:
    return error_event(exc)


def _stream_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Anthropic's headers for the stream's response (its content type is the stream response's own)."""
    return [(k, v) for k, v in relayed_headers(headers) if k != b"content-type"]
