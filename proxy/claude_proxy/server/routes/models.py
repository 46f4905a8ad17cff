"""GET /v1/models and /v1/models/{model}: the models Anthropic lists for the proxy's credential, plus the aliases.

The list is kept for `PROXY_MODELS_CACHE_SECONDS`; when the upstream will not list (no credential, an error), the
configured `PROXY_MODELS` are the answer. Listing takes no concurrency slot.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from claude_proxy.convert.request import resolve_model
from claude_proxy.errors import ProxyError
from claude_proxy.server.render import send_json
from claude_proxy.server.state import Edge, edge_of

log = logging.getLogger("claude_proxy")


async def list_models(scope: Scope, receive: Receive, send: Send) -> None:
    """List Models: the models this proxy offers, in OpenAI's list shape."""
    await send_json(send, {"object": "list", "data": await _model_list(scope)})


async def retrieve_model(scope: Scope, receive: Receive, send: Send) -> None:
    """Retrieve Model: one entry of the list, found by its id or by the name it resolves to."""
    model: str = scope["path_params"]["model"]
    edge = edge_of(scope)
    data = await _model_list(scope)
    wanted = {model, resolve_model(model, edge.options)} if model.strip() else {model}
    entry = next((m for m in data if m["id"] in wanted), None)
    if entry is None:
        raise ProxyError(
            f"The model `{model}` does not exist or you do not have access to it.",
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    await send_json(send, entry)


async def _model_list(scope: Scope) -> list[dict[str, Any]]:
    edge: Edge = edge_of(scope)
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    edge.check_bearer(authorization)
    models, settings = edge.models, edge.settings
    now = edge.clock()
    if now >= models.expires:
        try:
            found = await edge.upstream.list_models()
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


def _epoch(value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0
