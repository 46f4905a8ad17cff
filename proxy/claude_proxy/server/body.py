"""The request body as a FastAPI dependency: read within its limits, parsed with orjson as one JSON object, validated
against the route's request model, a 400 in OpenAI's shape naming the first bad field otherwise.

FastAPI's own body parameter would read the body whole, with no size limit or read timeout, parse it with the
standard json module and answer a framework's 422 list, so the routes take their body from these dependencies
instead; `ProxyRoute` documents a body dependency's `model` as the route's request body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, Protocol, TypeVar

import orjson
from fastapi import Depends
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from claude_proxy.convert.errors import first_problem
from claude_proxy.errors import InvalidRequest
from claude_proxy.server.inbound import RequestHeaders, request_headers
from claude_proxy.server.limits import read_body
from claude_proxy.server.state import app_state

M = TypeVar("M", bound=BaseModel)


class DocumentedBody:
    """A body dependency: `model` (a pydantic model or a TypedDict) is what the OpenAPI document says the body is."""

    model: type


class JsonBody(DocumentedBody, Generic[M]):
    """The body validated as `model`."""

    def __init__(self, model: type[M]) -> None:
        self.model = model

    async def __call__(self, request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> M:
        return parse(self.model, await read_json_object(request, headers))


class RawBody(DocumentedBody):
    """The body's bytes, read within the limits and left as they came (a passthrough forwards them unchanged)."""

    def __init__(self, model: type) -> None:
        self.model = model

    async def __call__(self, request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> bytes:
        settings = app_state(request).settings
        return await read_body(request.receive, headers.content_length, settings.max_body_bytes, settings.body_timeout)


async def read_json_object(request: Request, headers: RequestHeaders) -> dict[str, Any]:
    """The body read within its limits and parsed as a JSON object."""
    settings = app_state(request).settings
    raw = await read_body(request.receive, headers.content_length, settings.max_body_bytes, settings.body_timeout)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload


def parse(model: type[M], payload: dict[str, Any]) -> M:
    """The body validated as `model`; a 400 naming the first bad field otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


class _Invalid(Protocol):
    def errors(self) -> Sequence[Any]: ...


def validation_error(exc: _Invalid) -> InvalidRequest:
    """The first validation problem (of pydantic's `ValidationError`, or FastAPI's `RequestValidationError`) as a
    400, naming the field the OpenAI way (`messages[0].content`)."""
    message, param = first_problem(exc.errors())
    return InvalidRequest(f"{message}: {param}" if param else message, param=param or None)
