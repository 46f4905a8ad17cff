"""The HTTP edge: routes, inbound key check, and the only place errors become OpenAI envelopes."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from claude_proxy import __version__
from claude_proxy.config import Settings
from claude_proxy.credentials import CredentialResolver
from claude_proxy.errors import InvalidRequest, ProxyError, Unauthorized
from claude_proxy.translate import Options, to_anthropic, to_openai
from claude_proxy.upstream import Upstream
from claude_proxy.wire import ChatRequest

log = logging.getLogger("claude_proxy")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ProxyError) -> Response:
    return json_response(exc.envelope(), exc.status, exc.headers)


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
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    settings = settings or Settings.from_env()
    options = Options.from_settings(settings)
    resolver = CredentialResolver(settings.api_key, settings.access_token, settings.credentials_path)
    inbound = tuple(key.encode() for key in settings.inbound_keys)
    models = ModelCache(settings.models_cache_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not inbound:
            log.warning("PROXY_API_KEYS is not set: /v1 endpoints accept requests without a key")
        timeout = httpx.Timeout(connect=settings.connect_timeout, read=settings.read_timeout, write=60.0, pool=30.0)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
            app.state.upstream = Upstream(client, settings.base_url, resolver)
            yield

    app = FastAPI(
        title="claude-code-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.resolver = resolver

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> Response:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.type)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        etype = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ProxyError(str(exc.detail), status=exc.status_code, type=etype))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return error_response(ProxyError("internal error in the proxy", status=500, type="server_error"))

    def check_key(request: Request) -> None:
        if not inbound:
            return
        header = request.headers.get("authorization", "")
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

    async def chat_completions(request: Request) -> Response:
        check_key(request)
        raw = await request.body()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise InvalidRequest("request body must be a JSON object")
        try:
            chat = ChatRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        translation = to_anthropic(chat, options)
        if chat.stream:
            raise InvalidRequest("streaming is not supported yet", param="stream")
        upstream: Upstream = request.app.state.upstream
        message, headers = await upstream.create_message(translation.body, request.headers.get("anthropic-beta"))
        body = to_openai(message, model=translation.model, created=int(clock()), json_tool=translation.json_tool)
        out_headers = {"x-upstream-request-id": headers["request-id"]} if "request-id" in headers else None
        return json_response(body, headers=out_headers)

    async def list_models(request: Request) -> Response:
        check_key(request)
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
        return json_response({"object": "list", "data": models.data})

    for prefix in ("/v1", ""):
        app.add_api_route(
            f"{prefix}/chat/completions", chat_completions, methods=["POST"], include_in_schema=not prefix
        )
        app.add_api_route(f"{prefix}/models", list_models, methods=["GET"], include_in_schema=not prefix)

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            credential = resolver.resolve()
        except Exception as exc:  # any failure to resolve means not ready; the reason carries no secret
            return json_response({"status": "unready", "reason": str(exc)}, 503)
        info: dict[str, Any] = {"status": "ready", "credential": credential.kind.value}
        if credential.expires_at is not None:
            info["expiresAt"] = datetime.fromtimestamp(credential.expires_at, UTC).isoformat().replace("+00:00", "Z")
            if credential.expired(clock()):
                info["status"], info["reason"] = "unready", "the OAuth access token has expired"
                return json_response(info, 503)
        return json_response(info)

    return app


def _epoch(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0
