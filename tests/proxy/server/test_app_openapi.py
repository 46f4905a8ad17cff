"""/openapi.json: generated from the route table and the request models the handlers validate with."""

from __future__ import annotations

import httpx

from claude_proxy.convert.responses import ResponsesRequest
from claude_proxy.convert.wire import ChatRequest
from tests.conftest import ProxyFactory


def test_the_schema_describes_the_three_apis_with_their_bodies(proxy: ProxyFactory) -> None:
    url = proxy()
    document = httpx.get(f"{url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert {(method.upper(), path) for path, operations in paths.items() for method in operations} == {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model}"),
        ("GET", "/health"),
        ("GET", "/readyz"),
    }
    schemas = document["components"]["schemas"]
    for path, model, fields in (
        ("/v1/chat/completions", "ChatRequest", {"model", "messages", "tools", "tool_choice", "stream"}),
        ("/v1/responses", "ResponsesRequest", {"model", "input", "instructions", "tools", "stream"}),
        ("/v1/messages", "MessagesRequest", {"model", "messages", "max_tokens", "system", "stream"}),
    ):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert fields <= set(schemas[model]["properties"]), model
    # the same models the handlers validate with, not a copy
    assert set(schemas["ChatRequest"]["properties"]) == set(ChatRequest.model_json_schema(by_alias=True)["properties"])
    assert set(schemas["ResponsesRequest"]["properties"]) == set(
        ResponsesRequest.model_json_schema(by_alias=True)["properties"]
    )
    assert set(schemas["MessagesRequest"]["required"]) == {"model", "messages", "max_tokens"}
    assert paths["/v1/models/{model}"]["get"]["parameters"][0]["name"] == "model"
    assert paths["/v1/chat/completions"]["post"]["summary"] == "Chat Completions"
    # every $ref resolves
    text = httpx.get(f"{url}/openapi.json").text
    for ref in {part.split('"')[0] for part in text.split('"$ref":"#/components/schemas/')[1:]}:
        assert ref in schemas, ref
