"""`ProxyRoute`: the route class of every router of the proxy, an `APIRouter(route_class=ProxyRoute)`.

FastAPI documents such a route as any other (the body dependency's model as its request body), but serves it from
a plan made once, when the route is made: each dependency called once, in FastAPI's order, with the `Request` and
the values of the dependencies it names, then the endpoint the same way. FastAPI's own solver walks the dependency
tree on every request (about 0.1 ms of CPU for a route with four dependencies, against 0.5 ms for a whole chat
completion); the plan is a loop over a list. It supports what the proxy's dependencies use and refuses, when the
route is made, anything else (a query, header or body parameter, a sync or `yield` dependency), so no declaration
is silently ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from claude_proxy.errors import ProxyError
from claude_proxy.server.body import DocumentedBody
from claude_proxy.server.render import error_response

# The responses of a route that may stream: the OpenAPI document says so beside FastAPI's JSON default.
STREAMABLE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer, or with `stream: true` its server-sent events",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}

_REQUEST = object()  # the plan's name for the request itself
Args = tuple[tuple[str, Any], ...]  # (parameter name, the plan step whose value it takes)


class ProxyRoute(APIRoute):
    """An `APIRoute` run from a plan of its dependencies (module docstring); errors a dependency or the endpoint
    raise are answered by `error_response` (OpenAI's envelope here) through the app's `ProxyError` handler."""

    body_model: type | None = None

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = self.get_route_handler()

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        # In place of FastAPI's wrapper, whose exit stacks serve only `yield` dependencies (which `_plan` refuses);
        # an exception goes up to the app's exception middleware, which answers it as the wrapper would.
        self.app = serve
        body = next((call for call in _calls(self.dependant) if isinstance(call, DocumentedBody)), None)
        if body is not None:
            self.body_model = body.model
            self.openapi_extra = {
                **(self.openapi_extra or {}),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _ref(body.model)}}},
                },
            }

    def error_response(self, exc: ProxyError) -> Response:
        return error_response(exc)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        steps: list[tuple[Callable[..., Awaitable[Any]], Args]] = []
        endpoint_args = _plan(self.dependant, steps, set())
        endpoint = self.dependant.call
        assert endpoint is not None

        async def handler(request: Request) -> Response:
            done: dict[Any, Any] = {_REQUEST: request}
            for call, args in steps:
                done[call] = await call(**{name: done[step] for name, step in args})
            response: Response = await endpoint(**{name: done[step] for name, step in endpoint_args})
            return response

        return handler


def _plan(dependant: Dependant, steps: list[tuple[Callable[..., Awaitable[Any]], Args]], seen: set[Any]) -> Args:
    """The arguments `dependant` takes; the dependencies they come from appended to `steps` (each once)."""
    where = getattr(dependant.call, "__qualname__", None) or type(dependant.call).__qualname__
    unsupported = (
        dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )
    if unsupported:
        raise TypeError(f"{where}: a ProxyRoute passes only the Request and dependencies' values")
    args: list[tuple[str, Any]] = []
    if dependant.request_param_name:
        args.append((dependant.request_param_name, _REQUEST))
    for sub in dependant.dependencies:
        call = sub.call
        if not _is_async(call):
            raise TypeError(f"{where}: a ProxyRoute's dependencies are `async def` functions (not sync, not yield)")
        if call not in seen:
            sub_args = _plan(sub, steps, seen)
            seen.add(call)
            steps.append((call, sub_args))  # type: ignore[arg-type]
        if sub.name:  # a route's own `dependencies=[...]` have no parameter name: run for their checks only
            args.append((sub.name, call))
    return tuple(args)


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _calls(dependant: Dependant) -> Iterable[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _ref(model: type) -> str:
    return f"#/components/schemas/{model.__name__}"


def body_schemas(models: Iterable[type]) -> dict[str, Any]:
    """The JSON Schemas of the request body models (and of the models they use), for the document's components."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = TypeAdapter(model).json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
