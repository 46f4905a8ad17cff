"""`/openapi.json`, generated from the app's route table and the request models the handlers validate with.

The handlers read their bodies themselves (to bound their size and answer validation errors in OpenAI's shape), so
no framework infers the schema from their signatures: each `Api` entry names its body model (a pydantic model or a
TypedDict) and the document is built from those, once, when the app is made.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from claude_proxy import __version__

Serve = Callable[[Scope, Receive, Send], Awaitable[None]]
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


class Handler:
    """A route's handler served as plain ASGI: Starlette wraps a bare function as a request/response endpoint, an
    object it calls as it is."""

    __slots__ = ("serve",)

    def __init__(self, serve: Serve) -> None:
        self.serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send)


@dataclass(frozen=True)
class Api:
    """One route: served at `path` (and, with `bare`, without its `/v1` too), in the schema unless not `public`."""

    method: str
    path: str
    handler: Serve
    body: type | None = None  # the request body's model: a pydantic model or a TypedDict
    bare: bool = False
    public: bool = True

    @property
    def summary(self) -> str:
        doc = (self.handler.__doc__ or "").strip()
        return doc.split(":", 1)[0].strip() if doc else self.handler.__name__

    @property
    def description(self) -> str:
        doc = (self.handler.__doc__ or "").strip()
        return " ".join(doc.split(":", 1)[1].split()) if ":" in doc else ""


def openapi_document(apis: Sequence[Api]) -> dict[str, Any]:
    """OpenAPI 3.1 for `apis`: each path, its parameters, and its request body's JSON Schema."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for api in apis:
        path = _PARAM.sub(r"{\1}", api.path)
        operation: dict[str, Any] = {
            "summary": api.summary,
            "operationId": re.sub(r"\W+", "_", f"{api.method} {path}".lower()).strip("_"),
            "responses": {
                "200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}},
            },
        }
        if api.description:
            operation["description"] = api.description
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(api.path)
        ]
        if parameters:
            operation["parameters"] = parameters
        if api.body is not None:
            schema = TypeAdapter(api.body).json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            name = api.body.__name__
            components[name] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            }
            operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": {"type": "string"}}
        paths.setdefault(path, {})[api.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "claude-code-proxy", "version": __version__},
        "paths": paths,
    }
    if components:
        document["components"] = {"schemas": components}
    return document
