"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's own API, passed through with the proxy's credential.

Anthropic-native clients (the anthropic SDKs, tools configured with a base URL) share the login the proxy keeps:
the body goes upstream unchanged, with the proxy's credential (`Upstream` builds the auth headers: x-api-key, or
the OAuth bearer with the OAuth beta merged into the client's `anthropic-beta`) and the client's
`anthropic-version`. Nothing else the client sent is forwarded: not its x-api-key or Authorization (those carry one
of the proxy's own inbound keys), no cookies, no hop-by-hop headers. The answer comes back with its status and body
unchanged; a stream is relayed chunk by chunk as it arrives.

The same machinery as chat completions: the concurrency limit, the disconnect watch and shutdown drain, retries
before the first byte (HTTP 429/529/5xx answers inside the upstream layer; a stream whose first event is a retryable
`error` here), the access line and the metrics. Errors the proxy itself answers use Anthropic's error envelope,
since the clients of these routes read that shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import orjson
from starlette.types import Receive, Scope, Send
from yarl import URL

from claude_proxy.convert.tables import ANTHROPIC_TYPES, ERROR_TYPES
from claude_proxy.errors import ProxyError, UnusableAnswer, UpstreamError
from claude_proxy.retry import RETRYABLE_STATUS, RetryBudget
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.limits import read_body
from claude_proxy.server.render import note_error
from claude_proxy.server.state import Edge, Turn, bearer, edge_of, info_of, stream_ended
from claude_proxy.server.streaming import SSEResponse, until_disconnect
from claude_proxy.upstream.api import ANTHROPIC_VERSION as DEFAULT_VERSION
from claude_proxy.upstream.api import Upstream
from claude_proxy.upstream.client import Response, TransportError
from claude_proxy.upstream.ratelimits import PREFIX as RATELIMIT_PREFIX
from claude_proxy.upstream.sse import SSEDecoder

# Response headers relayed to the client besides the rate-limit ones; the rest (connection, server, cookies, …) stay.
RELAYED = frozenset({"content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry"})

# A first stream event of these types is retried as the HTTP status it stands for.
_STREAM_RETRY = {name: kind.status for name, kind in ERROR_TYPES.items() if kind.status in RETRYABLE_STATUS}


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


def _chunks(response: Response) -> AsyncIterator[bytes]:
    """The response body as it arrives (one iterator per response: it can be read once). Streams are asked for
    without a content-encoding; one that comes encoded anyway arrives here decoded."""
    return response.chunks()


async def _close(response: Response) -> None:
    with anyio.CancelScope(shield=True):
        await response.close()


class _Usage:
    """Token counts picked from the relayed events (message_start and message_delta) for metrics and the log."""

    def __init__(self) -> None:
        self.decoder = SSEDecoder()
        self.usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> list[Any]:
        events = self.decoder.feed(chunk)
        for event in events:
            if event.event in ("message_start", "message_delta"):
                try:
                    data = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(data, dict):
                    continue
                holder = data.get("message") if event.event == "message_start" else data
                usage = holder.get("usage") if isinstance(holder, dict) else None
                if isinstance(usage, dict):
                    self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
        return events


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
            response, chunks, first, usage = await until_disconnect(
                receive, lambda: _open_stream(upstream, raw, client_betas, url, version, budget), edge.drain
            )
            info.upstream_request_id = response.headers.get("request-id")
            if response.status_code >= 400:
                await _answer(send, response.status_code, response.headers, response.content or b"", budget)
                return
            edge.metrics.ttft.observe(time.perf_counter() - started)
            turn.usage = usage.usage  # filled as the events pass
            await _relay(scope, receive, send, edge, info, response, chunks, first, usage)
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


async def _open_stream(
    upstream: Upstream, raw: bytes, client_betas: str | None, url: URL, version: str, budget: RetryBudget
) -> tuple[Response, AsyncIterator[bytes], list[bytes], _Usage]:
    """Open the stream and read up to its first event; retries while nothing was sent to the client."""
    while True:
        response = await upstream.send_with_retries(
            raw, client_betas, stream=True, budget=budget, url=url, version=version, relay_errors=True
        )
        if response.status_code >= 400:
            return response, _chunks(response), [], _Usage()
        usage = _Usage()
        chunks = _chunks(response)
        first: list[bytes] = []
        retry_as: int | None = None
        try:
            async for chunk in chunks:
                first.append(chunk)
                events = [e for e in usage.feed(chunk) if e.event != "ping"]
                if events:
                    if events[0].event == "error":
                        retry_as = _stream_error_status(events[0].data)
                    break
        except TransportError as exc:
            await _close(response)
            if await _backoff(upstream, budget, f"stream failed early ({type(exc).__name__})"):
                continue
            raise UnusableAnswer(
                f"connection to Anthropic lost before the stream began ({type(exc).__name__})"
            ) from None
        except BaseException:
            await _close(response)
            raise
        retryable = retry_as in RETRYABLE_STATUS
        if retryable and upstream.retry.delay(budget.retries + 1, None, budget.waited) is not None:
            await _close(response)
            if await _backoff(upstream, budget, f"stream began with an error (HTTP {retry_as} kind)"):
                continue
        # Out of retries, a stream that begins with an error goes to the client as Anthropic sent it.
        return response, chunks, first, usage


async def _relay(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: Edge,
    info: RequestInfo,
    response: Response,
    chunks: AsyncIterator[bytes],
    first: list[bytes],
    usage: _Usage,
) -> None:
    state = {"finished": False}
    broken: list[UpstreamError | None] = [None]  # what cut the stream, for its end

    async def body() -> AsyncIterator[bytes]:
        try:
            for chunk in first:
                yield chunk
            try:
                async for chunk in chunks:
                    usage.feed(chunk)
                    yield chunk
            except TransportError as exc:
                error = broken[0] = UnusableAnswer(f"connection to Anthropic lost mid-stream ({type(exc).__name__})")
                yield error_event(error)
                return
            state["finished"] = True
        finally:
            await _close(response)

    def on_close(outcome: str) -> None:
        stream_ended(edge, info, outcome, broken[0], state["finished"])

    sse = SSEResponse(body(), drain=edge.drain, on_close=on_close, cut=error_event)
    sse.raw_headers += [(k, v) for k, v in relayed_headers(response.headers) if k != b"content-type"]
    await sse(scope, receive, send)


async def _backoff(upstream: Upstream, budget: RetryBudget, why: str) -> bool:
    return await upstream.backoff(budget.retries + 1, None, budget, why, "stream_error")


def _stream_error_status(data: str) -> int | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    error = value.get("error") if isinstance(value, dict) else None
    etype = error.get("type") if isinstance(error, dict) else None
    return _STREAM_RETRY.get(etype) if isinstance(etype, str) else None
