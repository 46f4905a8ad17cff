"""GET /health (the process answers), /readyz (it can answer: not draining, a credential that resolves; with what
Anthropic said of the login, when the token expires, and whether the last good credential stands in for an
unreadable credentials file) and /metrics (Prometheus)."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.server.metrics import CONTENT_TYPE
from claude_proxy.server.render import json_response
from claude_proxy.server.routing import ProxyRoute
from claude_proxy.server.state import app_state

router = APIRouter(route_class=ProxyRoute)


@router.get("/health", summary="Health", description="The process is up.")
async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Readiness", description="Whether the proxy can serve (503 with the reason when not).")
async def readyz(request: Request) -> Response:
    state = app_state(request)
    if state.drain.draining:
        return json_response({"status": "unready", "reason": "the proxy is shutting down"}, 503)
    try:
        credential = await state.resolver.resolve_async()
    except Exception as exc:  # any failure to resolve means not ready; the reason carries no secret
        return json_response({"status": "unready", "reason": str(exc)}, 503)
    # Neither a refused login nor an expiry date that has passed makes the pod unready: Anthropic is the judge of a
    # token (it may still accept one past its `expiresAt`), and an unready only replica would leave clients with
    # connection errors instead of the proxy's explanation. Both are reported here (the operator reads `login` into
    # status), in /metrics, and in the error body of a refused request.
    info: dict[str, Any] = {"status": "ready", "credential": credential.kind.value, "login": state.login.as_json()}
    # The credentials file does not read well, and the last good credential stands in: ready still (it serves), and
    # said here so that whoever looks finds out before the grace runs out.
    note = state.resolver.fallback_note()
    if note:
        info["credentialNote"] = note
    if credential.expires_at is not None:
        info["expiresAt"] = datetime.fromtimestamp(credential.expires_at, UTC).isoformat().replace("+00:00", "Z")
        if credential.expired(state.clock()):
            info["expired"] = True
    return json_response(info)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Metrics: the Prometheus text format. The credentials file is looked at first, off the event loop, so the
    token expiry gauge (read synchronously while rendering) finds the answer already there."""
    state = app_state(request)
    with suppress(Exception):  # a missing or malformed file shows as no expiry gauge; /readyz says why
        await state.resolver.resolve_async()
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
