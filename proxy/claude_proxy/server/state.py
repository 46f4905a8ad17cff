"""What the routes share: the app's state (`Edge`), the inbound key check, and one request's turn at the upstream.

`Edge` is made in the app's lifespan (it holds the upstream client, which lives on the event loop) and reaches each
request through the ASGI scope (`edge_of(scope)`). A route takes its turn at the upstream with `Turn`: the one place
that takes a concurrency slot and, however the request ends, releases it and records the usage it saw, each once.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.types import Receive, Scope, Send

from claude_proxy.config import Settings
from claude_proxy.convert.request import Options
from claude_proxy.credentials.resolver import CredentialResolver
from claude_proxy.errors import ProxyError, Unauthorized
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.limits import Drain, Limiter
from claude_proxy.server.metrics import Metrics
from claude_proxy.server.responses_store import ItemStore
from claude_proxy.server.streaming import SSEResponse, until_disconnect
from claude_proxy.upstream.api import Upstream
from claude_proxy.upstream.login import LoginState
from claude_proxy.upstream.relay import StreamRelay


class ModelCache:
    """GET /v1/models answers, kept for a short while; the configured list when the upstream refuses."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.expires = 0.0
        self.data: list[dict[str, Any]] = []


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """What the routes share, for one app: made in its lifespan, found in each request's scope."""

    settings: Settings
    options: Options
    upstream: Upstream
    resolver: CredentialResolver
    limiter: Limiter
    drain: Drain
    metrics: Metrics
    login: LoginState
    models: ModelCache
    items: ItemStore  # the Responses output items kept so item references resolve
    inbound: tuple[bytes, ...]  # PROXY_API_KEYS, encoded; empty: no key asked for
    clock: Callable[[], float]

    def check_key(self, presented: bytes | None, hint: str) -> None:
        """Refuse the request unless it presented one of the inbound keys (compared in constant time)."""
        if not self.inbound:
            return
        ok = False
        for key in self.inbound:  # compare against every key, so timing does not reveal which one matched
            ok |= hmac.compare_digest(presented or b"", key)
        if not ok:
            raise Unauthorized(f"Incorrect or missing API key: {hint}", code="invalid_api_key")

    def check_bearer(self, authorization: bytes | None) -> None:
        """The OpenAI routes' key check: `Authorization: Bearer <key>`."""
        if self.inbound:
            self.check_key(bearer(authorization), "send Authorization: Bearer <one of PROXY_API_KEYS>")


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


def edge_of(scope: Scope) -> Edge:
    edge: Edge = scope["state"]["edge"]
    return edge


def info_of(scope: Scope) -> RequestInfo:
    info: RequestInfo = scope["state"]["info"]
    return info


class Turn:
    """One request's turn at the upstream, as `async with Turn(edge, receive, info) as turn:`.

    Entering takes a concurrency slot, waiting in the bounded queue when all are busy (the wait ends early, with an
    error, when the client leaves or the shutdown grace runs out). Leaving, however the block ends (an answer, an
    upstream error, the client gone mid-stream, the deadline), releases the slot and records `turn.usage` (Anthropic's
    usage object, or the live one a stream translator fills) on the access line and in the metrics. A route sets
    `usage` and nothing else: the slot and the counts are this class's alone."""

    __slots__ = ("_slot", "edge", "info", "receive", "usage")

    def __init__(self, edge: Edge, receive: Receive, info: RequestInfo) -> None:
        self.edge = edge
        self.receive = receive
        self.info = info
        self.usage: Mapping[str, Any] | None = None

    async def __aenter__(self) -> Turn:
        limiter = self.edge.limiter
        slot = limiter.try_acquire()
        if slot is None:  # only a wait needs watching for the client leaving or the shutdown deadline
            slot = await until_disconnect(self.receive, limiter.acquire, self.edge.drain)
        self._slot = slot
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._slot.release()
        usage = self.usage
        if usage and isinstance(usage, Mapping):
            self.info.add_usage(usage)
            self.edge.metrics.usage(self.info.model, usage)


def stream_ended(edge: Edge, info: RequestInfo, outcome: str, error: ProxyError | None, finished: bool) -> None:
    """What the end of a relayed stream leaves on the access line and in the metrics: the error line it ended with,
    the shutdown that cut it, or the client that left before the end."""
    if error is not None:  # the stream ended with an error line (the client may leave after it)
        edge.metrics.stream_errors.labels(error.type).inc()
        info.error = error.code or error.type
    elif outcome == "shutdown":
        edge.metrics.stream_errors.labels("shutting_down").inc()
        info.error = "shutting_down"
    elif outcome == "client_gone" and not finished:
        edge.metrics.disconnects.inc()
        info.error = "client_disconnected"


async def relay_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: Edge,
    turn: Turn,
    relay: StreamRelay,
    started: float,
    headers: Callable[[Mapping[str, str]], list[tuple[bytes, bytes]]] | None = None,
) -> None:
    """Open the relay (retries happen here, before anything is sent), then stream it to the client, with `headers`
    made from the upstream's, if given. A passthrough relay that opened onto Anthropic's own error answer
    (`relay.refused`) sends nothing: that answer is the caller's to relay."""
    await until_disconnect(receive, relay.start, edge.drain)
    info: RequestInfo = turn.info
    response, translator = relay.response, relay.translator
    assert response is not None
    info.upstream_request_id = response.headers.get("request-id")
    if relay.refused:
        return
    edge.metrics.ttft.observe(time.perf_counter() - started)
    assert translator is not None
    turn.usage = translator.usage  # the translator's own counts, filled as the stream goes
    fail = relay.shape.fail

    def on_close(outcome: str) -> None:
        stream_ended(edge, info, outcome, relay.error, relay.finished)

    def cut(error: ProxyError) -> bytes:  # the shutdown deadline: the stream's own ending for an error
        return fail(translator, error)

    sse = SSEResponse(relay, drain=edge.drain, on_close=on_close, cut=cut)
    if headers is not None:
        sse.raw_headers += headers(response.headers)
    await sse(scope, receive, send)
