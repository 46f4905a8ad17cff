"""The request body as a FastAPI dependency: read within its limits (size, deadline, the process's body budget),
parsed with orjson as one JSON object no deeper than `PROXY_MAX_JSON_DEPTH`, validated against the route's request
model, a 400 in OpenAI's shape naming the first bad field otherwise.

The depth is checked once, here: a deeper body (a schema in `tools` or `response_format` nested hundreds deep) would
otherwise pass validation and fail later, where the upstream request is encoded (orjson refuses depths past 255).

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
from claude_proxy.server.limits import BodyHold, read_body
from claude_proxy.server.state import app_state, request_info

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
        return await read_within_limits(request, headers)


async def read_within_limits(request: Request, headers: RequestHeaders) -> bytes:
    """The body's bytes, read within its size limit and deadline, held against the process's body budget until the
    request ends."""
    state = app_state(request)
    settings = state.settings
    info = request_info(request)
    hold = info.body = BodyHold(state.bodies)
    return await read_body(
        request.receive, headers.content_length, settings.max_body_bytes, settings.body_timeout, hold
    )


async def read_json_object(request: Request, headers: RequestHeaders) -> dict[str, Any]:
    """The body read within its limits and parsed as a JSON object no deeper than the limit."""
    raw = await read_within_limits(request, headers)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own bound, 1024
            raise _too_deep(app_state(request).settings.max_json_depth) from None
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    limit = app_state(request).settings.max_json_depth
    if too_deep(payload, limit):
        raise _too_deep(limit)
    return payload


def too_deep(value: Any, limit: int) -> bool:
    """Whether `value` (parsed JSON: exact dicts and lists) nests objects and arrays more than `limit` deep (a scalar
    is depth 0, `{}` 1). One pass, stopping at the first container too deep; scalars, most of a request, cost a type
    check each."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        if depth > limit:
            return True
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))
    return False


def _too_deep(limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"request body nests JSON objects and arrays more than {limit} deep (PROXY_MAX_JSON_DEPTH)",
        code="json_too_deep",
    )


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
