"""What the routes share: the app's state (`AppState`), the inbound key check, and one request's concurrency slot.

`AppState` is made in the app's lifespan (it holds the upstream client, which lives on the event loop) and reaches
each request through the lifespan state (`app_state(request)`). A route holds a concurrency slot at the upstream with
`UpstreamSlot`: the one place that takes it and, however the request ends, releases it and records the usage it
saw, each once.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from starlette.requests import Request
from starlette.types import Receive

from claude_proxy.config import Settings
from claude_proxy.convert.request import Options
from claude_proxy.credentials.resolver import CredentialResolver
from claude_proxy.errors import ProxyError, Unauthorized
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.limits import BodyBudget, Drain, Limiter, Slot
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
class AppState:
    """What the routes share, for one app: made in its lifespan, found in each request's state."""

    settings: Settings
    options: Options
    upstream: Upstream
    resolver: CredentialResolver
    limiter: Limiter
    bodies: BodyBudget  # the request body bytes held at once, over all requests
    drain: Drain
    metrics: Metrics
    login: LoginState
    models: ModelCache
    items: ItemStore  # the Responses output items kept so item references resolve
    # PROXY_API_KEYS, encoded; empty: no key asked for. Out of repr(): uvicorn's trace log prints each request's
    # scope, whose state holds this object.
    inbound: tuple[bytes, ...] = field(repr=False)
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


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


def app_state(request: Request) -> AppState:
    """The app's state, from the lifespan state Starlette copies into each request's scope."""
    state: AppState = request.scope["state"]["app"]
    return state


def request_info(request: Request) -> RequestInfo:
    """What the access line will say of this request (put in its state by `AccessMiddleware`)."""
    info: RequestInfo = request.scope["state"]["info"]
    return info


class UpstreamSlot:
    """One request's concurrency slot at the upstream, as `async with UpstreamSlot(state, receive, info) as slot:`.

    Entering takes a slot, waiting in the bounded queue when all are busy (the wait ends early, with an error, when
    the client leaves or the shutdown grace runs out). `release()` gives it back and records `slot.usage` (Anthropic's
    usage object, or the live one a stream translator fills) on the access line and in the metrics; the first call
    does, any later one nothing. Leaving the block releases, however it ends (an answer, an upstream error, the
    client gone, the deadline), unless `hold_for_stream()` was called: then the stream's response releases it when
    the stream ends. A route sets `usage` and nothing else: the slot and the counts are this class's alone."""

    __slots__ = ("_slot", "info", "receive", "state", "streaming", "usage")

    def __init__(self, state: AppState, receive: Receive, info: RequestInfo) -> None:
        self.state = state
        self.receive = receive
        self.info = info
        self.usage: Mapping[str, Any] | None = None
        self.streaming = False
        self._slot: Slot | None = None

    async def __aenter__(self) -> UpstreamSlot:
        limiter = self.state.limiter
        slot = limiter.try_acquire()
        if slot is None:  # only a wait needs watching for the client leaving or the shutdown deadline
            slot = await until_disconnect(self.receive, limiter.acquire, self.state.drain)
        self._slot = slot
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.streaming or exc is not None:
            self.release()

    def answered(self, message: Any) -> None:
        """A whole answer came: its usage to record, and its stop reason and model for the traces."""
        if not isinstance(message, Mapping):
            return
        usage = message.get("usage")
        self.usage = usage if isinstance(usage, Mapping) else None
        stop, model = message.get("stop_reason"), message.get("model")
        self.info.finish_reason = stop if isinstance(stop, str) else None
        self.info.response_model = model if isinstance(model, str) else None

    def hold_for_stream(self) -> None:
        """The block is about to return a stream's response, which calls `release()` when the stream ends."""
        self.streaming = True

    def release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is None:
            return
        slot.release()
        usage = self.usage
        if usage and isinstance(usage, Mapping):
            self.info.add_usage(usage)
            self.state.metrics.usage(self.info.model, usage)


def stream_ended(state: AppState, info: RequestInfo, outcome: str, error: ProxyError | None, finished: bool) -> None:
    """What the end of a relayed stream leaves on the access line and in the metrics: the error line it ended with,
    the shutdown that cut it, or the client that left before the end."""
    if error is not None:  # the stream ended with an error line (the client may leave after it)
        state.metrics.stream_errors.labels(error.type).inc()
        info.error = error.code or error.type
    elif outcome == "shutdown":
        state.metrics.stream_errors.labels("shutting_down").inc()
        info.error = "shutting_down"
    elif outcome == "client_stalled":  # counted by the access edge, with the non-streamed answers so cut
        info.error = "client_stalled"
    elif outcome == "client_gone" and not finished:
        state.metrics.disconnects.inc()
        info.error = "client_disconnected"


async def relay_stream(
    receive: Receive,
    state: AppState,
    slot: UpstreamSlot,
    relay: StreamRelay,
    started: float,
    headers: Callable[[Mapping[str, str]], list[tuple[bytes, bytes]]] | None = None,
) -> SSEResponse | None:
    """Open the relay (retries happen here, before anything is sent), then the response that streams it to the client
    (with `headers` made from the upstream's, if given) and, when the stream ends, releases `slot`. A passthrough relay
    that opened onto Anthropic's own error answer (`relay.refused`) gives None: that answer is the caller's to relay."""
    await until_disconnect(receive, relay.start, state.drain)
    info: RequestInfo = slot.info
    upstream, translator = relay.response, relay.translator
    assert upstream is not None
    info.upstream_request_id = upstream.headers.get("request-id")
    if relay.refused:
        return None
    first = time.perf_counter()
    info.first_token = first - started
    state.metrics.ttft.observe(info.first_token)
    assert translator is not None
    slot.usage = translator.usage  # the translator's own counts, filled as the stream goes
    fail = relay.shape.fail

    def on_close(outcome: str) -> None:
        stream_ended(state, info, outcome, relay.error, relay.finished)
        output = info.output_tokens
        slot.release()
        info.finish_reason = getattr(translator, "stop_reason", None)
        info.response_model = getattr(translator, "model", None)
        output = info.output_tokens - output
        if relay.finished and relay.error is None and output > 1:  # a whole answer: (end - first token) / (n - 1)
            info.tpot = (time.perf_counter() - first) / (output - 1)
            state.metrics.tpot.observe(info.tpot)

    def error_ending(error: ProxyError) -> bytes:  # the shutdown deadline: the stream's own ending for an error
        return fail(translator, error)

    response = SSEResponse(relay, drain=state.drain, on_close=on_close, error_ending=error_ending)
    if headers is not None:
        response.raw_headers += headers(upstream.headers)
    slot.hold_for_stream()
    return response
