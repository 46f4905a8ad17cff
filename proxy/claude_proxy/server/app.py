"""The composition root: the FastAPI app, the lifespan that makes the `AppState` the routes share, the routers, and
the error handlers.

Each route module has its `APIRouter` (of `ProxyRoute`s, which run their dependencies from a plan made once); the
access edge (`AccessMiddleware`) sees every request first. OpenAI error envelopes are rendered here only: a
`ProxyError` a dependency or an endpoint raised before its answer began (in the route's own envelope: Anthropic's
on its routes), FastAPI's validation error, and the router's own 404 and 405. `/openapi.json` is FastAPI's,
generated from the routes; the request models come from their body dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from claude_proxy import __version__
from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import Credential, CredentialResolver
from claude_proxy.errors import ProxyError
from claude_proxy.retry import RetryPolicy
from claude_proxy.server.access import AccessMiddleware
from claude_proxy.server.body import validation_error
from claude_proxy.server.limits import BodyBudget, Drain, Limiter
from claude_proxy.server.metrics import Metrics
from claude_proxy.server.render import error_response, json_response, note_error
from claude_proxy.server.responses_store import ItemStore
from claude_proxy.server.routes import chat, messages, models, probes, responses
from claude_proxy.server.routing import ProxyRoute, body_schemas
from claude_proxy.server.startup import startup_lines
from claude_proxy.server.state import AppState, ModelCache
from claude_proxy.server.streaming import SERVER_SEND
from claude_proxy.server.telemetry import Telemetry, from_env
from claude_proxy.upstream.api import Upstream
from claude_proxy.upstream.client import Client, Timeouts
from claude_proxy.upstream.login import LoginState, check_when_idle

log = logging.getLogger("claude_proxy")
# Upstream connections beyond PROXY_MAX_CONCURRENCY, for model listings (which the limiter does not count).
SPARE_CONNECTIONS = 8

# The OpenAI routes are served under /v1 and without it (clients configured with either base URL); Anthropic's own
# paths under /v1 only.
ROUTERS: tuple[APIRouter, ...] = (chat.router, responses.router, messages.router, models.router, probes.router)
DOCUMENT = APIRouter(route_class=ProxyRoute)


@DOCUMENT.get("/openapi.json", include_in_schema=False)
async def document(request: Request) -> Response:
    """The OpenAPI document of the public routes: FastAPI's (built on first request, the models' schemas take a
    moment)."""
    app: ProxyApp = request.app
    return json_response(app.openapi())


# The app's own telemetry is its Prometheus metrics and access log; FastAPI's OpenTelemetry hooks stay off.
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    telemetry: Telemetry | Literal["env"] | None = "env",
) -> ProxyApp:
    """The app. `sleep` is how the upstream layer waits between retries (tests pass one that does not wait);
    `telemetry` is the OpenTelemetry the standard `OTEL_` environment configures (`server.telemetry.from_env`: None
    when it configures none), or the one given.

    What lives outside the event loop is made here (the server reads `app.state.drain` for its SIGTERM drain); the
    `AppState`, with the upstream client, is made when the lifespan starts and reaches each request through the
    lifespan state (`state.app_state(request)`)."""
    settings = settings or Settings.from_env()
    if telemetry == "env":
        telemetry = from_env()
    resolver = settings.credential_resolver()
    metrics = Metrics(clock=clock)
    limiter = Limiter(
        settings.max_concurrency,
        settings.max_queue,
        settings.queue_timeout,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
    )
    bodies = BodyBudget(settings.body_budget_bytes, on_reject=limiter.on_reject)
    drain = Drain(settings.shutdown_grace)
    login = LoginState(clock=clock)
    items = ItemStore(settings.responses_store_bytes, settings.responses_store_ttl)
    metrics.credential = lambda: _credential_or_none(resolver)
    metrics.inflight = lambda: float(limiter.active)
    metrics.queued = lambda: float(limiter.queued)
    metrics.draining = lambda: drain.draining
    metrics.login = login.gauge
    metrics.stored = items.usage

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        for level, line in startup_lines(settings, resolver, clock()):
            log.log(level, line)
        timeouts = (
            Timeouts(settings.connect_timeout, settings.read_timeout).client_timeout(),
            Timeouts(settings.connect_timeout, settings.stream_idle_timeout).client_timeout(),
        )
        retry = RetryPolicy(max_retries=settings.max_retries, max_wait=settings.retry_max_wait)
        drain.bind(asyncio.get_running_loop())
        checker: asyncio.Task[None] | None = None
        client = Client(settings.base_url, max_connections=settings.max_concurrency + SPARE_CONNECTIONS)
        await client.start()
        try:
            upstream = Upstream(
                client,
                resolver,
                timeouts=timeouts,
                retry=retry,
                sleep=sleep,
                observer=metrics,
                login=login,
                tracer=telemetry if telemetry is not None and telemetry.tracer is not None else None,
            )
            if settings.login_check_seconds > 0:
                checker = asyncio.get_running_loop().create_task(
                    check_when_idle(login, upstream.list_models, settings.login_check_seconds), name="login check"
                )
            yield {
                "app": AppState(
                    settings=settings,
                    options=settings.conversion_options(),
                    upstream=upstream,
                    resolver=resolver,
                    limiter=limiter,
                    bodies=bodies,
                    drain=drain,
                    metrics=metrics,
                    login=login,
                    models=ModelCache(settings.models_cache_seconds),
                    items=items,
                    inbound=tuple(key.encode() for key in settings.inbound_keys),
                    clock=clock,
                )
            }
        finally:
            if checker is not None:
                checker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checker
            await client.close()
            if telemetry is not None:
                telemetry.shutdown()

    app = ProxyApp(
        title="claude-code-proxy",
        version=__version__,
        redirect_slashes=False,  # a trailing slash is a 404 like any unknown URL, never a redirect made from Host
        openapi_url=None,  # served by `document` below, a route like the others (FastAPI's own has no route label)
        docs_url=None,
        redoc_url=None,
        telemetry=NO_TELEMETRY,
        middleware=[Middleware(AccessMiddleware, metrics=metrics, telemetry=telemetry)],
        exception_handlers={
            ProxyError: _proxy_error,
            RequestValidationError: _validation_error,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    for router in (*ROUTERS, DOCUMENT):
        # The routers' routes on the app's own router: `include_router` would serve each through an inclusion context
        # matched anew on every request, for prefixes and dependencies these routers do not use.
        app.router.routes.extend(router.routes)
    app.state.drain = drain
    return app


class ProxyApp(FastAPI):
    """FastAPI, with the server's own `send` in each request's scope (`SERVER_SEND`): a stream's body goes straight
    to it, past the middleware, which only ever look at the response's head. The key is taken out again when the
    request ends: the server's `send` is bound to the object that holds the scope, and a reference cycle per
    request would leave every request's objects to the garbage collector, in pauses of milliseconds."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        finally:
            scope.pop(SERVER_SEND, None)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with the schemas of the request bodies its routes' body dependencies name."""
        if self.openapi_schema is None:
            document = super().openapi()
            models = {
                route.body_model: None
                for router in ROUTERS
                for route in router.routes
                if isinstance(route, ProxyRoute) and route.body_model is not None and route.include_in_schema
            }
            document.setdefault("components", {}).setdefault("schemas", {}).update(body_schemas(models))
        return self.openapi_schema  # type: ignore[return-value]


async def _proxy_error(request: Request, exc: Exception) -> Response:
    """A `ProxyError` raised before the answer began, in the envelope of the route it was raised on."""
    assert isinstance(exc, ProxyError)
    note_error(exc, request.scope.get("state", {}).get("info"), request.method, request.url.path)
    route = request.scope.get("route")
    return route.error_response(exc) if isinstance(route, ProxyRoute) else error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own validation error (a parameter it validated), as OpenAI's 400 naming the parameter."""
    assert isinstance(exc, RequestValidationError)
    return await _proxy_error(request, validation_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's own refusals: no such route (naming those there are, as OpenAI says "Invalid URL"), or not this
    method."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path}): this proxy serves {ENDPOINTS}"
        return error_response(ProxyError(message, status=404, type="invalid_request_error", code="unknown_url"))
    return error_response(
        ProxyError(
            str(exc.detail), status=exc.status_code, type="invalid_request_error", headers=dict(exc.headers or {})
        )
    )


def _endpoints() -> str:
    """What an unknown URL's 404 names: every route, the twins without /v1 said once at the end."""
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, ProxyRoute)]
    paths = {route.path for route in routes}
    listed = [route for route in routes if f"/v1{route.path}" not in paths]
    return (
        ", ".join(
            f"{method} {route.path.replace(':path', '')}" for route in listed for method in sorted(route.methods or ())
        )
        + " (the /v1 routes also without the /v1)"
    )


ENDPOINTS = _endpoints()


def _credential_or_none(resolver: CredentialResolver) -> Credential | None:
    try:
        return resolver.resolve()
    except Exception:  # a missing or malformed file shows as no expiry gauge; /readyz says why
        return None
