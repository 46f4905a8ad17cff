"""The composition root: the routes, the lifespan that makes the `Edge` they share, and the one error handler.

Every route is a plain ASGI handler (`chat_route`, `responses_route`, `passthrough`, `models_route`, `probes`) under
one plain Starlette app; the access edge (`AccessMiddleware`) sees every request first. OpenAI error envelopes are
rendered here only: a `ProxyError` a handler raises before its answer began, and the router's own 404 and 405.
`/openapi.json` is generated from the same route table and request models the handlers validate with (`openapi`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from claude_proxy.config import Settings
from claude_proxy.convert.anthropic import CountTokensRequest, MessagesRequest
from claude_proxy.convert.responses import ResponsesRequest
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.credentials.resolver import Credential, CredentialResolver
from claude_proxy.errors import ProxyError
from claude_proxy.retry import RetryPolicy
from claude_proxy.server.access import AccessMiddleware
from claude_proxy.server.limits import Drain, Limiter
from claude_proxy.server.metrics import Metrics
from claude_proxy.server.openapi import Api, Handler, openapi_document
from claude_proxy.server.render import error_response, json_response, note_error
from claude_proxy.server.responses_store import ItemStore
from claude_proxy.server.routes.chat import chat_completions
from claude_proxy.server.routes.messages import count_tokens, messages
from claude_proxy.server.routes.models import list_models, retrieve_model
from claude_proxy.server.routes.probes import health, metrics, readyz
from claude_proxy.server.routes.responses import responses
from claude_proxy.server.startup import startup_lines
from claude_proxy.server.state import Edge, ModelCache
from claude_proxy.server.streaming import SERVER_SEND
from claude_proxy.upstream.api import Upstream
from claude_proxy.upstream.client import Client, Timeouts
from claude_proxy.upstream.login import LoginState

log = logging.getLogger("claude_proxy")
# Upstream connections beyond PROXY_MAX_CONCURRENCY, for model listings (which the limiter does not count).
SPARE_CONNECTIONS = 8

# The public API. The OpenAI routes are served under /v1 and without it (clients configured with either base URL);
# Anthropic's own paths under /v1 only.
API = (
    Api("POST", "/v1/chat/completions", chat_completions, body=ChatRequest, bare=True),
    Api("POST", "/v1/responses", responses, body=ResponsesRequest, bare=True),
    Api("POST", "/v1/messages", messages, body=MessagesRequest),
    Api("POST", "/v1/messages/count_tokens", count_tokens, body=CountTokensRequest),
    Api("GET", "/v1/models", list_models, bare=True),
    Api("GET", "/v1/models/{model:path}", retrieve_model, bare=True),
    Api("GET", "/health", health),
    Api("GET", "/readyz", readyz),
    Api("GET", "/metrics", metrics, public=False),
)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Starlette:
    """The app. `sleep` is how the upstream layer waits between retries (tests pass one that does not wait).

    What lives outside the event loop is made here (the server reads `app.state.drain` for its SIGTERM drain); the
    `Edge`, with the upstream client, is made when the lifespan starts and reaches each request through its scope."""
    settings = settings or Settings.from_env()
    resolver = settings.credential_resolver()
    metrics = Metrics(clock=clock)
    limiter = Limiter(
        settings.max_concurrency,
        settings.max_queue,
        settings.queue_timeout,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
    )
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
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Edge]]:
        for level, line in startup_lines(settings, resolver, clock()):
            log.log(level, line)
        if not settings.inbound_keys:
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
            upstream = Upstream(
                client, resolver, timeouts=timeouts, retry=retry, sleep=sleep, observer=metrics, login=login
            )
            yield {
                "edge": Edge(
                    settings=settings,
                    options=settings.conversion_options(),
                    upstream=upstream,
                    resolver=resolver,
                    limiter=limiter,
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
            await client.close()

    routes = [Route(api.path, Handler(api.handler), methods=[api.method]) for api in API]
    routes += [Route(api.path[3:], Handler(api.handler), methods=[api.method]) for api in API if api.bare]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    app = ProxyApp(
        routes=routes,
        middleware=[Middleware(AccessMiddleware, metrics=metrics)],
        exception_handlers={ProxyError: _proxy_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.drain = drain
    return app


class ProxyApp(Starlette):
    """Starlette, with the server's own `send` in each request's scope (`SERVER_SEND`): a stream's body goes
    straight to it, past the middleware, which only ever look at the response's head. The key is taken out again
    when the request ends: the server's `send` is bound to the object that holds the scope, and a reference cycle
    per request would leave every request's objects to the garbage collector, in pauses of milliseconds."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        try:
            await super().__call__(scope, receive, send)
        finally:
            scope.pop(SERVER_SEND, None)


@functools.cache
def _document() -> dict[str, Any]:
    return openapi_document([api for api in API if api.public])


async def openapi(request: Request) -> Response:
    """The OpenAPI document of the public routes (built on first request: the models' schemas take a moment)."""
    return json_response(_document())


async def _proxy_error(request: Request, exc: Exception) -> Response:
    """A `ProxyError` a handler raised before its answer began, as OpenAI's envelope."""
    assert isinstance(exc, ProxyError)
    note_error(exc, request.scope.get("state", {}).get("info"), request.method, request.url.path)
    return error_response(exc)


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


ENDPOINTS = ", ".join(f"{api.method} {api.path.replace(':path', '')}" for api in API) + (
    " (the /v1 routes also without the /v1)"
)


def _credential_or_none(resolver: CredentialResolver) -> Credential | None:
    try:
        return resolver.resolve()
    except Exception:  # a missing or malformed file shows as no expiry gauge; /readyz says why
        return None
