"""Request translation of what shapes the answer, pure: structured outputs and strict tools with their rewritten
schemas and budgets, and the parameters that cannot be answered (refused) or are accepted in their off form."""

from typing import Any

import pytest

from claude_proxy.convert.request import (
    to_anthropic,
)
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.errors import InvalidRequest
from tests.proxy.convert.request_support import NO_CACHE, TOOL, translate, user

BOUNDED = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}


def strict_tool(name: str, parameters: dict[str, Any] = BOUNDED, strict: bool | None = True) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters, "strict": strict}}


def test_json_schema_is_rewritten_for_structured_outputs() -> None:
    body = translate(
        messages=[user("q")], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": BOUNDED}}
    )
    sent = body["output_config"]["format"]["schema"]
    assert sent["properties"]["n"] == {"type": "integer", "description": "{minimum: 1}"}
    assert sent["additionalProperties"] is False
    assert BOUNDED["properties"]["n"] == {"type": "integer", "minimum": 1}  # the request is not mutated


def test_strict_tools_become_strict_tool_use_with_rewritten_schemas() -> None:
    body = translate(
        messages=[user("q")], tools=[strict_tool("a"), strict_tool("b", strict=False), strict_tool("c", strict=None)]
    )
    a, b, c = body["tools"]
    assert a["strict"] is True and a["input_schema"]["properties"]["n"] == {
        "type": "integer",
        "description": "{minimum: 1}",
    }
    assert a["input_schema"]["additionalProperties"] is False
    for tool in (b, c):  # tools not marked strict go as they came: plain tool use takes full JSON Schema
        assert "strict" not in tool and tool["input_schema"] == BOUNDED


def test_strict_tools_past_the_request_budgets_go_without_strict() -> None:
    body = translate(messages=[user("q")], tools=[strict_tool(f"t{i}") for i in range(22)])
    assert [t.get("strict", False) for t in body["tools"]] == [True] * 20 + [False] * 2
    assert body["tools"][21]["input_schema"] == BOUNDED
    nullable = {
        "type": "object",
        "properties": {f"p{i}": {"type": ["string", "null"]} for i in range(5)},
        "required": [f"p{i}" for i in range(5)],
    }
    body = translate(messages=[user("q")], tools=[strict_tool(f"t{i}", nullable) for i in range(4)])
    assert [t.get("strict", False) for t in body["tools"]] == [True, True, True, False]  # 15 unions, not 20
    optional = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": optional}}
    body = translate(
        messages=[user("q")], tools=[strict_tool(f"t{i}", optional) for i in range(2)], response_format=fmt
    )
    assert [t.get("strict", False) for t in body["tools"]] == [True, False]  # the output format counts first


def test_models_without_structured_outputs() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": BOUNDED}}
    t = to_anthropic(
        ChatRequest.model_validate(
            {"model": "claude-3-5-haiku-20241022", "messages": [user("q")], "response_format": fmt}
        ),
        NO_CACHE,
    )
    # the classic way: a forced tool that takes the client's schema as it is
    assert "output_config" not in t.body and t.json_tool == "json_response"
    assert t.body["tools"] == [
        {"name": "json_response", "description": t.body["tools"][0]["description"], "input_schema": BOUNDED}
    ]
    body = translate(model="claude-sonnet-4-20250514", messages=[user("q")], tools=[strict_tool("a")])
    assert "strict" not in body["tools"][0] and body["tools"][0]["input_schema"] == BOUNDED
    assert "strict" in translate(model="claude-haiku-4-5", messages=[user("q")], tools=[strict_tool("a")])["tools"][0]


def test_recursive_json_schema_falls_back_to_a_forced_tool_or_an_instruction() -> None:
    tree = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["name", "children"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "tree", "schema": tree}}
    t = to_anthropic(
        ChatRequest.model_validate({"model": "claude-sonnet-4-6", "messages": [user("q")], "response_format": fmt}),
        NO_CACHE,
    )
    assert "output_config" not in t.body and t.json_tool == "json_response"
    assert t.body["tools"][0]["input_schema"] == tree
    body = translate(messages=[user("q")], response_format=fmt, tools=[TOOL])
    assert body["system"][-1]["text"].startswith("Respond only with a single valid JSON object matching this JSON")
    assert '"$ref":"#"' in body["system"][-1]["text"]
    # a recursive strict tool stays a plain tool
    body = translate(messages=[user("q")], tools=[strict_tool("walk", tree)])
    assert "strict" not in body["tools"][0]


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("logprobs", True, "logprobs"),
        ("top_logprobs", 3, "top_logprobs"),
        ("modalities", ["text", "audio"], "modalities"),
        ("audio", {"voice": "alloy", "format": "wav"}, "modalities"),
    ],
)
def test_parameters_that_cannot_be_answered_are_refused(field: str, value: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(messages=[user("q")], **{field: value})
    assert info.value.param == param and info.value.status == 400


def test_parameters_in_their_off_form_and_hints_are_accepted() -> None:
    body = translate(
        messages=[user("q")],
        logprobs=False,
        top_logprobs=0,
        modalities=["text"],
        presence_penalty=0.5,
        frequency_penalty=0.2,
        logit_bias={"50256": -100},
        seed=7,
        service_tier="auto",
        store=False,
    )
    assert set(body) == {"model", "max_tokens", "messages"}
