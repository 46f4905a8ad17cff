"""The request body: read within its limits, parsed as one JSON object, validated against a request model."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope

from claude_proxy.errors import InvalidRequest
from claude_proxy.server.limits import read_body
from claude_proxy.server.state import Edge

M = TypeVar("M", bound=BaseModel)


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
