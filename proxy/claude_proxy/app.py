"""The HTTP edge: routes, inbound key check, and the only place errors become OpenAI envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from claude_proxy import __version__
from claude_proxy.access import INTERNAL_ERROR, AccessMiddleware, RequestInfo
from claude_proxy.client import Client, Timeouts
from claude_proxy.config import Settings
from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.convert.request import Options, Translation, resolve_model, to_anthropic, to_openai
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.credentials.store import Credential, CredentialResolver
from claude_proxy.errors import InvalidRequest, ProxyError, Unauthorized, UpstreamError
from claude_proxy.limits import ClientGone, Drain, Limiter, Slot, read_body
from claude_proxy.login import LoginState
from claude_proxy.metrics import CONTENT_TYPE, Metrics
from claude_proxy.relay import StreamRelay, error_line
from claude_proxy.retry import RetryPolicy
from claude_proxy.startup import startup_lines
from claude_proxy.upstream import Upstream

log = logging.getLogger("claude_proxy")
T = TypeVar("T")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Upstream connections beyond PROXY_MAX_CONCURRENCY, for model listings (which the limiter does not count).
SPARE_CONNECTIONS = 8


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


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once, even while the upstream is silent, always
    closes its body iterator (which closes the upstream stream), and ends the stream with an error line when the
    shutdown grace period runs out. `on_close(outcome)` runs once at the end: "done" (the iterator ran out),
    "client_gone" or "shutdown"."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        drain: Drain | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.drain = drain
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "done"
        failure: Exception | None = None

        async def pump(group: anyio.abc.TaskGroup) -> None:
            # In a task of its own: each event resumes this short chain of frames, not the request's whole stack.
            nonlocal failure
            try:
                with contextlib.suppress(OSError):  # the client went away while we were writing
                    await self.stream_response(send)
            except Exception as exc:  # raised from the request's own task below, as if it had run there
                failure = exc
            group.cancel_scope.cancel()

        async def cut_at_deadline(group: anyio.abc.TaskGroup, expired: asyncio.Future[None]) -> None:
            nonlocal outcome
            await asyncio.wait((expired,))
            outcome = "shutdown"
            group.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(pump, group)
                if self.drain is not None and self.drain.expired is not None:
                    group.start_soon(cut_at_deadline, group, self.drain.expired)
                while (await receive())["type"] != "http.disconnect":
                    pass
                outcome = "client_gone"
                group.cancel_scope.cancel()
            if failure is not None:
                raise failure
            if outcome == "shutdown" and self.drain is not None:
                with contextlib.suppress(OSError):
                    await send(
                        {"type": "http.response.body", "body": error_line(self.drain.error()), "more_body": True}
                    )
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if self.on_close is not None:
                self.on_close(outcome)

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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


Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


def answering_errors(serve: Callable[[Scope, Receive, Send, RequestInfo], Awaitable[None]]) -> Endpoint:
    """A plain ASGI endpoint around `serve`: a ProxyError raised before the response began is answered in OpenAI's
    envelope, as the app's own handler would."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        info: RequestInfo = scope["state"]["info"]
        try:
            await serve(scope, receive, send, info)
        except ProxyError as exc:
            if info.status:  # the response had begun: nothing more can be said to this client
                raise
            _note_error(exc, info, scope["method"], scope["path"])
            await send_json(send, exc.envelope(), exc.status, exc.headers)

    return endpoint


async def read_json_object(
    scope: Scope, receive: Receive, settings: Settings, check_key: Callable[[bytes | str | None], None]
) -> tuple[dict[str, Any], str | None]:
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
    check_key(authorization)
    raw = await read_body(receive, length, settings.max_body_bytes, settings.body_timeout)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload, betas


def _note_error(exc: ProxyError, info: RequestInfo | None, method: str, path: str) -> None:
    """What an error about to be answered leaves on the request's access line; a 5xx is logged too."""
    if info is not None:
        info.error = exc.code or exc.type
        if isinstance(exc, UpstreamError) and exc.request_id:
            info.upstream_request_id = exc.request_id
    if exc.status >= 500:
        log.warning("%s %s -> %d %s", method, path, exc.status, exc.type)


def _validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequest:
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


class ModelCache:
    """GET /v1/models answers, kept for a short while; the configured list when the upstream refuses."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.expires = 0.0
        self.data: list[dict[str, Any]] = []


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> FastAPI:
    """The app. `sleep` is how the upstream layer waits between retries (tests pass one that does not wait)."""
    settings = settings or Settings.from_env()
    options = Options.from_settings(settings)
    resolver = CredentialResolver.from_settings(settings)
    inbound = tuple(key.encode() for key in settings.inbound_keys)
    models = ModelCache(settings.models_cache_seconds)
    metrics = Metrics(clock=clock)
    limiter = Limiter(
        settings.max_concurrency,
        settings.max_queue,
        settings.queue_timeout,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
    )
    drain = Drain(settings.shutdown_grace)
    metrics.credential = lambda: _credential_or_none(resolver)
    metrics.inflight = lambda: float(limiter.active)
    metrics.queued = lambda: float(limiter.queued)
    metrics.draining = lambda: drain.draining
    login = LoginState(clock=clock)
    metrics.login = login.gauge

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for level, line in startup_lines(settings, resolver, clock()):
            log.log(level, line)
        if not inbound:
            log.warning("PROXY_API_KEYS is not set: /v1 endpoints accept requests without a key")
        timeouts = (
            Timeouts(settings.connect_timeout, settings.read_timeout).client_timeout(),
            Timeouts(settings.connect_timeout, settings.stream_idle_timeout).client_timeout(),
        )
        retry = RetryPolicy(max_retries=settings.max_retries, max_wait=settings.retry_max_wait)
        drain.bind(asyncio.get_running_loop())
        client = Client(settings.base_url, max_connections=settings.max_concurrency + SPARE_CONNECTIONS)
        await client.start()
        try:
            app.state.upstream = Upstream(
                client, resolver, timeouts=timeouts, retry=retry, sleep=sleep, observer=metrics, login=login
            )
            yield
        finally:
            await client.close()

    app = ProxyAPI(
        title="claude-code-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.resolver = resolver
    app.state.metrics = metrics
    app.state.limiter = limiter
    app.state.drain = drain
    app.state.login = login
    app.edge = AccessMiddleware(app.dispatch, metrics=metrics)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        # Starlette's outermost layer answers with this, then re-raises for the access edge to log and count.
        return Response(INTERNAL_ERROR, status_code=500, media_type="application/json")

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> Response:
        _note_error(exc, getattr(request.state, "info", None), request.method, request.url.path)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:  # no route: say which there are, as OpenAI says "Invalid URL"
            message = f"Invalid URL ({request.method} {request.url.path}): this proxy serves {_endpoints(app)}"
            return error_response(ProxyError(message, status=404, type="invalid_request_error", code="unknown_url"))
        return error_response(ProxyError(str(exc.detail), status=exc.status_code, type="invalid_request_error"))

    def check_key(authorization: str | bytes | None) -> None:
        if not inbound:
            return
        header = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization or ""
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        ok = False
        for key in inbound:  # compare against every key, so timing does not reveal which one matched
            ok |= hmac.compare_digest(presented, key)
        if not ok:
            raise Unauthorized(
                "Incorrect or missing API key: send Authorization: Bearer <one of PROXY_API_KEYS>",
                code="invalid_api_key",
            )

    async def chat_completions(scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> None:
        """POST /v1/chat/completions as a plain ASGI app (see `answering_errors`): the hot path, served without
        Starlette's request and response objects."""
        payload, betas = await read_json_object(scope, receive, settings, check_key)
        try:
            chat = ChatRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        translation = to_anthropic(chat, options)
        info.model, info.stream = translation.model, bool(chat.stream)
        upstream: Upstream = app.state.upstream
        created = int(clock())
        started = time.perf_counter()
        slot = limiter.try_acquire()
        if slot is None:  # only a wait needs watching for the client leaving or the shutdown deadline
            slot = await until_disconnect(receive, limiter.acquire, drain)
        if chat.stream:
            response = await stream_completion(
                receive, info, chat, translation, upstream, betas, created, started, slot
            )
            await response(scope, receive, send)
            return
        try:
            message, headers = await until_disconnect(
                receive, lambda: upstream.create_message(translation.body, betas), drain
            )
        finally:
            slot.release()
        request_id = headers.get("request-id")
        info.upstream_request_id = request_id
        usage = message.get("usage")
        if isinstance(usage, dict):
            info.add_usage(usage)
            metrics.usage(translation.model, usage)
        body = to_openai(message, model=translation.model, created=created, json_tool=translation.json_tool)
        await send_json(send, body, headers={"x-upstream-request-id": request_id} if request_id else None)

    async def stream_completion(
        receive: Receive,
        info: RequestInfo,
        chat: ChatRequest,
        translation: Translation,
        upstream: Upstream,
        betas: str | None,
        created: int,
        started: float,
        slot: Slot,
    ) -> Response:
        try:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            relay = StreamRelay(
                upstream,
                orjson.dumps({**translation.body, "stream": True}),
                betas,
                lambda: StreamTranslator(
                    model=translation.model,
                    created=created,
                    include_usage=include_usage,
                    json_tool=translation.json_tool,
                ),
                idle_timeout=settings.stream_idle_timeout,
            )
            await until_disconnect(receive, relay.start, drain)
        except BaseException:
            slot.release()
            raise
        metrics.ttft.observe(time.perf_counter() - started)
        if relay.response is not None:
            info.upstream_request_id = relay.response.headers.get("request-id")

        def on_close(outcome: str) -> None:
            slot.release()
            if relay.translator is not None:
                info.add_usage(relay.translator.usage)
                metrics.usage(translation.model, relay.translator.usage)
            if relay.error is not None:  # the stream ended with an error line (the client may leave after it)
                metrics.stream_errors.labels(relay.error.type).inc()
                info.error = relay.error.code or relay.error.type
            elif outcome == "shutdown":
                metrics.stream_errors.labels("shutting_down").inc()
                info.error = "shutting_down"
            elif outcome == "client_gone" and not relay.finished:
                metrics.disconnects.inc()
                info.error = "client_disconnected"

        return SSEResponse(relay.__aiter__(), drain=drain, on_close=on_close)

    async def model_list(request: Request) -> list[dict[str, Any]]:
        check_key(request.headers.get("authorization"))
        now = clock()
        if now >= models.expires:
            upstream: Upstream = request.app.state.upstream
            try:
                found = await upstream.list_models()
                data = [
                    {"id": m["id"], "object": "model", "created": _epoch(m.get("created_at")), "owned_by": "anthropic"}
                    for m in found
                ]
            except ProxyError as exc:
                log.info("upstream model list unavailable (%s); answering with the configured list", exc.type)
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "anthropic"} for m in settings.models]
            known = {m["id"] for m in data}
            data += [
                {"id": alias, "object": "model", "created": 0, "owned_by": "anthropic"}
                for alias in settings.model_aliases
                if alias not in known
            ]
            models.data, models.expires = data, now + models.ttl
        return models.data

    async def list_models(request: Request) -> Response:
        return json_response({"object": "list", "data": await model_list(request)})

    async def retrieve_model(request: Request, model: str) -> Response:
        """GET /v1/models/{model}: one entry of the list, found by its id or by the name it resolves to."""
        data = await model_list(request)
        wanted = {model, resolve_model(model, options)} if model.strip() else {model}
        entry = next((m for m in data if m["id"] in wanted), None)
        if entry is None:
            raise ProxyError(
                f"The model `{model}` does not exist or you do not have access to it.",
                status=404,
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return json_response(entry)

    from claude_proxy.passthrough import messages_endpoints  # they build on this module's edge helpers
    from claude_proxy.responses_route import responses_endpoint

    responses = responses_endpoint(app, check_key, options, clock)
    messages, count_tokens = messages_endpoints(app)
    for prefix in ("/v1", ""):
        # Plain ASGI routes: the handlers read and validate the body themselves, so FastAPI's per-request work would
        # be pure overhead on the hot path. The app dispatches POSTs to them directly; `_openapi` documents chat.
        for path, endpoint in (("/chat/completions", answering_errors(chat_completions)), ("/responses", responses)):
            route = _PlainRoute(f"{prefix}{path}", endpoint, methods=["POST"])
            app.router.routes.append(route)
            app.direct[route.path] = route
        app.add_api_route(f"{prefix}/models", list_models, methods=["GET"], include_in_schema=bool(prefix))
        app.add_api_route(
            f"{prefix}/models/{{model:path}}", retrieve_model, methods=["GET"], include_in_schema=bool(prefix)
        )
    for path, endpoint in (("/v1/messages", messages), ("/v1/messages/count_tokens", count_tokens)):
        route = _PlainRoute(path, endpoint, methods=["POST"])  # Anthropic's own paths, under /v1 only
        app.router.routes.append(route)
        app.direct[route.path] = route
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/readyz")
    async def readyz() -> Response:
        if drain.draining:
            return json_response({"status": "unready", "reason": "the proxy is shutting down"}, 503)
        try:
            credential = resolver.resolve()
        except Exception as exc:  # any failure to resolve means not ready; the reason carries no secret
            return json_response({"status": "unready", "reason": str(exc)}, 503)
        # A refused login keeps the pod ready (restarting it mends nothing); the operator reads `login` into status.
        info: dict[str, Any] = {"status": "ready", "credential": credential.kind.value, "login": login.as_json()}
        if credential.expires_at is not None:
            info["expiresAt"] = datetime.fromtimestamp(credential.expires_at, UTC).isoformat().replace("+00:00", "Z")
            if credential.expired(clock()):
                info["status"], info["reason"] = "unready", "the OAuth access token has expired"
                return json_response(info, 503)
        return json_response(info)

    return app


class ProxyAPI(FastAPI):
    """The proxy's ASGI app: every HTTP request passes the access edge (`edge`, an `AccessMiddleware`: request id,
    metrics, the access log line); a POST to a route in `direct` then goes straight to that route's ASGI app, and
    everything else through FastAPI's middleware, exception layers and router. The hot path so skips per-request
    work it has no use for; the route stays in the router too, so a mounted prefix (`root_path`) still finds it."""

    edge: ASGIApp
    direct: dict[str, _PlainRoute]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.edge(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.direct.get(scope["path"]) if scope["method"] == "POST" and not self.root_path else None
        if route is None:
            await super().__call__(scope, receive, send)
            return
        scope["route"] = route
        await route.app(scope, receive, send)


class _PlainRoute(Route):
    """A Starlette route serving a plain ASGI app, that names itself in the scope as FastAPI's own routes do (the
    access log and the metrics label requests by route), and stays out of FastAPI's generated schema."""

    def __init__(self, path: str, asgi: ASGIApp, methods: list[str]) -> None:
        super().__init__(path, asgi, methods=methods, include_in_schema=False)
        self.app = asgi  # served as it is: Starlette would wrap a plain function as a request handler

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the chat route with its request body: the route reads the raw body itself (to bound its
    size and answer validation errors in OpenAI's format) and is a plain Starlette route, so FastAPI cannot see it or
    the ChatRequest model on its own."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    body = ChatRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components["ChatRequest"] = body
    chat = {
        "post": {
            "summary": "Chat Completions",
            "operationId": "chat_completions_v1_chat_completions_post",
            "responses": {
                "200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
            },
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
            },
        }
    }
    schema["paths"] = {"/v1/chat/completions": chat, **schema["paths"]}
    app.openapi_schema = schema
    return schema


def _endpoints(app: FastAPI) -> str:
    """The app's routes as `METHOD /path` for an error message; a route that is also served under /v1 is named
    once, with the /v1."""
    paths = {route.path_format for route in app.routes if isinstance(route, Route)}
    named: list[str] = []
    for route in app.routes:
        if not isinstance(route, Route) or route.path == app.openapi_url or f"/v1{route.path_format}" in paths:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            named.append(f"{method} {route.path_format}")
    return ", ".join(named) + " (the /v1 routes also without the /v1)"


def _credential_or_none(resolver: CredentialResolver) -> Credential | None:
    try:
        return resolver.resolve()
    except Exception:  # a missing or malformed file shows as no expiry gauge; /readyz says why
        return None


def _epoch(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0
