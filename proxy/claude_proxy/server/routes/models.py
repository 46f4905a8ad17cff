"""GET /v1/models and /v1/models/{model}: the models Anthropic lists for the proxy's credential, plus the aliases.

The list is kept for `PROXY_MODELS_CACHE_SECONDS`; when the upstream will not list (no credential, an error), the
configured `PROXY_MODELS` are the answer. Listing takes no concurrency slot.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.convert.request import resolve_model
from claude_proxy.errors import ProxyError
from claude_proxy.server.inbound import openai_key
from claude_proxy.server.render import json_response
from claude_proxy.server.routing import ProxyRoute
from claude_proxy.server.state import AppState, app_state

log = logging.getLogger("claude_proxy")

router = APIRouter(route_class=ProxyRoute, dependencies=[Depends(openai_key)])
# The model's id as a documented path parameter; declared in the signature, FastAPI would validate it per request.
_MODEL_PARAMETER = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}


@router.get("/v1/models", summary="List Models", description="The models this proxy offers, in OpenAI's list shape.")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    return json_response({"object": "list", "data": await _model_list(app_state(request))})


@router.get(
    "/v1/models/{model:path}",
    summary="Retrieve Model",
    description="One entry of the list, found by its id or by the name it resolves to.",
    openapi_extra={"parameters": [_MODEL_PARAMETER]},
)
@router.get("/models/{model:path}", include_in_schema=False)
async def retrieve_model(request: Request) -> Response:
    model: str = request.path_params["model"]
    state = app_state(request)
    data = await _model_list(state)
    wanted = {model, resolve_model(model, state.options)} if model.strip() else {model}
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


async def _model_list(state: AppState) -> list[dict[str, Any]]:
    models, settings = state.models, state.settings
    now = state.clock()
    if now >= models.expires:
        try:
            found = await state.upstream.list_models()
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
