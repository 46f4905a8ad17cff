"""The edge's shared parts: the state every route reads, the inbound key check, the JSON body, the upstream turn.

`Edge` is made in the app's lifespan (it holds the upstream client, which lives on the event loop) and reaches each
request through the ASGI scope (`edge_of(scope)`). A route takes its turn at the upstream with `Turn`: the one place
that takes a concurrency slot and, however the request ends, releases it and records the usage it saw, each once.
`until_disconnect` and `SSEResponse` stop the work when the client leaves or the shutdown grace runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import anyio
import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from claude_proxy.access import RequestInfo
from claude_proxy.config import Settings
from claude_proxy.convert.request import Options
from claude_proxy.credentials.resolver import CredentialResolver
from claude_proxy.errors import InvalidRequest, ProxyError, Unauthorized, UpstreamError
from claude_proxy.limits import ClientGone, Drain, Limiter, read_body
from claude_proxy.login import LoginState
from claude_proxy.metrics import Metrics
from claude_proxy.relay import StreamRelay, error_line
from claude_proxy.responses_store import ItemStore
from claude_proxy.upstream import Upstream

log = logging.getLogger("claude_proxy")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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


async def read_json_object(scope: Scope, receive: Receive, edge: Edge) -> tuple[dict[str, Any], str | None]:
    """The inbound key checked, then the body read within its limits and parsed as a JSON object; returns it and the
    client's first `anthropic-beta` header."""
    authorization = length = betas = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"anthropic-beta" and betas is None:
            betas = value.decode("latin-1")
    edge.check_bearer(authorization)
    settings = edge.settings
    raw = await read_body(receive, length, settings.max_body_bytes, settings.body_timeout)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload, betas


def parse(model: type[M], payload: dict[str, Any]) -> M:
    """The body validated as `model`; a 400 naming the first bad field otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# A wait shorter than this is not watched for the client leaving: watching costs a task per request, which the many
# quick answers would pay for nothing. A client that leaves a longer wait is noticed at most this late.
WATCH_AFTER = 0.05


async def until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]], drain: Drain | None = None, watch_after: float = WATCH_AFTER
) -> T:
    """Run `work`, cancelling it (and so closing its upstream request) when the client disconnects, or when the
    shutdown grace period runs out.

    The work runs in the request's own task. Once it has run `watch_after` seconds, a watcher task listens for the
    disconnect; the watcher and the grace deadline cancel the request's task through callbacks, whichever comes
    first."""
    current = asyncio.current_task()
    assert current is not None
    loop = current.get_loop()
    state: dict[str, Any] = {"active": True, "why": None, "watcher": None}

    def stop(why: str) -> None:
        if state["active"] and state["why"] is None:
            state["why"] = why
            current.cancel()

    def on_disconnect(watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            stop("client_gone")

    def watch() -> None:
        if state["active"]:
            watcher = state["watcher"] = loop.create_task(_disconnected(receive))
            watcher.add_done_callback(on_disconnect)

    def on_deadline(_: asyncio.Future[None]) -> None:
        stop("shutdown")

    expired = drain.expired if drain is not None else None
    if expired is not None and expired.done():
        raise drain.error()  # type: ignore[union-attr]
    timer = loop.call_later(watch_after, watch) if watch_after > 0 else None
    if timer is None:
        watch()
    if expired is not None:
        expired.add_done_callback(on_deadline)
    try:
        return await work()
    except asyncio.CancelledError:
        if state["why"] == "shutdown":
            raise drain.error() from None  # type: ignore[union-attr]
        if state["why"] == "client_gone":
            raise ClientGone("client disconnected") from None
        raise
    finally:
        state["active"] = False
        if timer is not None:
            timer.cancel()
        if state["watcher"] is not None:
            state["watcher"].cancel()
        if expired is not None:
            expired.remove_done_callback(on_deadline)
        if state["why"] is not None:
            # Our cancellation is taken back however the work ended (raised it, swallowed it, or raised something
            # else meanwhile): the task goes on, and a cancel from anyone else still counts.
            current.uncancel()


SERVER_SEND = "claude_proxy.server_send"  # scope key: the ASGI server's own `send`, below every middleware


class Pump(Protocol):
    """A stream body that sends its own ASGI body messages (`more_body` true), and closes what it reads from in
    `aclose` (called once the response is over, whether or not `pump` ran)."""

    async def pump(self, send: Send) -> None: ...

    async def aclose(self) -> None: ...


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once, even while the upstream is silent, always
    closes its source (which closes the upstream stream, even when the client left before the body began), and
    ends the stream with `cut(error)` when the shutdown grace period runs out (chat completions' error line by
    default; the Responses API's `response.failed`, Anthropic's `error` event). `on_close(outcome)` runs once at
    the end: "done" (the body ran out), "client_gone" or "shutdown"."""

    def __init__(
        self,
        content: AsyncIterator[bytes] | Pump,
        *,
        drain: Drain | None = None,
        on_close: Callable[[str], None] | None = None,
        cut: Callable[[ProxyError], bytes] = error_line,
    ) -> None:
        """`content` is the body's pieces, or a `Pump` that sends them itself."""
        self.source = content
        self.pump: Callable[[Send], Awaitable[None]] | None = getattr(content, "pump", None)  # not isinstance: slow
        super().__init__(_no_body() if self.pump else content, media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[arg-type]
        self.drain = drain
        self.on_close = on_close
        self.cut = cut

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Plain asyncio tasks, not a task group: a stream's end then costs a few task switches (anyio's cancel scope
        # formats the cancelling task's repr each time, about a tenth of a millisecond per stream).
        outcome = "done"
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(send, scope.get(SERVER_SEND)))  # each event resumes only its frames
        gone = loop.create_task(_disconnected(receive))
        expired = self.drain.expired if self.drain is not None else None
        try:
            try:
                waits: set[asyncio.Future[Any]] = {pump, gone} if expired is None else {pump, gone, expired}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:  # the request's own task may be cancelled too: nothing outlives it
                pump.cancel()
                gone.cancel()
                await asyncio.wait((pump, gone))
            if not pump.cancelled():
                failure = pump.exception()
                if failure is not None:
                    raise failure  # as if it had run in the request's own task
            elif not gone.cancelled() and gone.exception() is None:
                outcome = "client_gone"
            elif expired is not None and expired.done():
                outcome = "shutdown"
            if outcome == "shutdown" and self.drain is not None:
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": self.cut(self.drain.error()), "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if self.on_close is not None:
                self.on_close(outcome)

    async def _pump(self, send: Send, body_send: Send | None) -> None:
        with contextlib.suppress(OSError):  # the client went away while we were writing
            await self.stream_response(send, body_send)

    async def stream_response(self, send: Send, body_send: Send | None = None) -> None:
        """The head through `send` (the middleware chain, which watches heads only), the body through `body_send`
        (the server's own send, when the app put it in the scope): each event then costs one call, not one per
        middleware layer."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body_send = body_send or send
        if self.pump is not None:
            await self.pump(body_send)
        else:
            async for chunk in self.body_iterator:
                await body_send({"type": "http.response.body", "body": chunk, "more_body": True})
        await body_send({"type": "http.response.body", "body": b"", "more_body": False})


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


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first validation problem as a 400, naming the field the OpenAI way (`messages[0].content`)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ""
    for part in first.get("loc", ()):
        if part == "body":
            continue
        if isinstance(part, int):
            param += f"[{part}]"
        elif isinstance(part, str) and part.endswith("]"):
            continue  # pydantic's union tags such as 'function-after[...]'
        else:
            param += f".{part}" if param else str(part)
    message = str(first.get("msg", "invalid request"))
    return InvalidRequest(f"{message}: {param}" if param else message, param=param or None)


async def relay_stream(
    scope: Scope, receive: Receive, send: Send, edge: Edge, turn: Turn, relay: StreamRelay, started: float
) -> None:
    """Open the relay (retries happen here, before anything is sent), then stream it to the client."""
    await until_disconnect(receive, relay.start, edge.drain)
    edge.metrics.ttft.observe(time.perf_counter() - started)
    info: RequestInfo = turn.info
    if relay.response is not None:
        info.upstream_request_id = relay.response.headers.get("request-id")
    if relay.translator is not None:
        turn.usage = relay.translator.usage  # the translator's own counts, filled as the stream goes

    def on_close(outcome: str) -> None:
        stream_ended(edge, info, outcome, relay.error, relay.finished)

    def cut(error: ProxyError) -> bytes:  # the shutdown deadline: the stream's own ending for an error
        return relay.failure(relay.translator, error)

    await SSEResponse(relay, drain=edge.drain, on_close=on_close, cut=cut)(scope, receive, send)
