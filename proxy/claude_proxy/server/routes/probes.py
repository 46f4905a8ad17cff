"""GET /health (the process answers), /readyz (it can serve: not draining, a credential that resolves and has not
expired, and what Anthropic said of the login) and /metrics (Prometheus)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from claude_proxy.server.metrics import CONTENT_TYPE
from claude_proxy.server.render import send_json
from claude_proxy.server.state import edge_of


async def health(scope: Scope, receive: Receive, send: Send) -> None:
    """Health: the process is up."""
    await send_json(send, {"status": "ok"})


async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
    """Readiness: whether the proxy can serve (503 with the reason when not)."""
    edge = edge_of(scope)
    if edge.drain.draining:
        await send_json(send, {"status": "unready", "reason": "the proxy is shutting down"}, 503)
        return
    try:
        credential = edge.resolver.resolve()
    except Exception as exc:  # any failure to resolve means not ready; the reason carries no secret
        await send_json(send, {"status": "unready", "reason": str(exc)}, 503)
        return
    # A refused login keeps the pod ready (restarting it mends nothing); the operator reads `login` into status.
    info: dict[str, Any] = {"status": "ready", "credential": credential.kind.value, "login": edge.login.as_json()}
    if credential.expires_at is not None:
        info["expiresAt"] = datetime.fromtimestamp(credential.expires_at, UTC).isoformat().replace("+00:00", "Z")
        if credential.expired(edge.clock()):
            info["status"], info["reason"] = "unready", "the OAuth access token has expired"
            await send_json(send, info, 503)
            return
    await send_json(send, info)


async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
    """Metrics: the Prometheus text format."""
    body = edge_of(scope).metrics.render()
    head = [(b"content-type", CONTENT_TYPE.encode("latin-1")), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})
