"""The body dependency's JSON depth bound, against the real app under uvicorn: a body nested past
`PROXY_MAX_JSON_DEPTH` (in `tools`, `response_format`, anywhere) is a 400 at parse, never a 500 where the upstream
request is encoded; one at the limit goes through."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from claude_proxy.server import body
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text

MODEL = "claude-sonnet-4-6"
ASK = [{"role": "user", "content": "Hello"}]


def nested(depth: int) -> dict[str, Any]:
    """A JSON schema `depth` objects deep (arrays of arrays of … strings)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": schema}}},
    }


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


@pytest.mark.parametrize("depth", [300, 600])
@pytest.mark.parametrize("where", ["tools", "response_format"])
def test_a_body_nested_too_deep_is_a_400_at_parse(
    fake: FakeAnthropic, proxy: ProxyFactory, where: str, depth: int
) -> None:
    url = proxy()
    extra = (
        {"tools": [tool(nested(depth))]} if where == "tools" else {"response_format": response_format(nested(depth))}
    )
    body = json.dumps({"model": MODEL, "messages": ASK, **extra})
    answer = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "json_too_deep" and "PROXY_MAX_JSON_DEPTH" in error["message"]
    assert fake.messages_requests == []


def test_a_body_past_the_parsers_own_bound_is_the_same_400(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    deep = '{"model": "' + MODEL + '", "messages": [], "metadata": ' + "[" * 2000 + "]" * 2000 + "}"
    for path in ("/v1/chat/completions", "/v1/responses"):
        answer = httpx.post(f"{url}{path}", content=deep, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "json_too_deep", path


def test_the_depth_limit_is_a_setting_and_a_body_at_it_passes(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_JSON_DEPTH="12")
    fake.script(message(text("fine")))
    # body {} > tools [] > tool {} > function {} > parameters {} > properties {}: a schema 6 deep makes 12 in all
    at_limit = {"model": MODEL, "messages": ASK, "tools": [tool(nested(6))]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=at_limit)
    assert answer.status_code == 200, answer.text
    over = {"model": MODEL, "messages": ASK, "tools": [tool(nested(7))]}
    answer = httpx.post(f"{url}/v1/responses", json={"model": MODEL, "input": "hi", "metadata": {"a": nested(12)}})
    assert answer.status_code == 400 and "more than 12 deep" in answer.json()["error"]["message"]
    answer = httpx.post(f"{url}/v1/chat/completions", json=over)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "json_too_deep"
    assert len(fake.messages_requests) == 1


def test_too_deep_counts_objects_and_arrays_and_skips_scalars() -> None:
    too_deep = body.too_deep
    assert not too_deep({}, 1) and too_deep({"a": {}}, 1)
    assert not too_deep({"a": [1, "x", None, {"b": []}]}, 4) and too_deep({"a": [{"b": [[]]}]}, 4)
    assert not too_deep({"s": "{" * 10_000}, 1)  # brackets inside a string are not nesting
