"""Pure translation: every OpenAI request field and every Anthropic response shape, without I/O."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from claude_proxy.config import Settings
from claude_proxy.convert.request import (
    HISTORY_TOOL_DESCRIPTION,
    JSON_INSTRUCTION,
    MISSING_RESULT,
    Options,
    resolve_model,
    to_anthropic,
)
from claude_proxy.convert.response import to_openai
from claude_proxy.convert.tables import chat_usage
from claude_proxy.convert.tables import finish_reason as map_finish_reason
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.errors import InvalidRequest

OPTS = Settings.from_env({}).conversion_options()
NO_CACHE = Settings.from_env({"PROXY_PROMPT_CACHE": "off"}).conversion_options()


def translate(options: Options = NO_CACHE, **request: Any) -> dict[str, Any]:
    request.setdefault("model", "claude-sonnet-4-6")
    return to_anthropic(ChatRequest.model_validate(request), options).body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(id: str, name: str = "lookup", args: str = '{"q": 1}') -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def test_system_and_developer_messages_merge_in_order_wherever_they_stand() -> None:
    body = translate(
        messages=[
            {"role": "system", "content": "one"},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "three"},
            user("again"),
        ]
    )
    assert body["system"] == [{"type": "text", "text": t} for t in ("one", "two", "three")]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_consecutive_same_role_messages_merge_and_empty_ones_vanish() -> None:
    body = translate(messages=[user("a"), user(""), user("b"), {"role": "assistant", "content": ""}, user("c")])
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": t} for t in "abc"]}]


def test_conversation_starting_with_assistant_gets_a_user_turn_first() -> None:
    body = translate(messages=[{"role": "assistant", "content": "I said"}, user("then")])
    assert body["messages"][0]["role"] == "user"
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "I said"}]}


def test_only_system_messages_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(messages=[{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


def test_images() -> None:
    body = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}},
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://x.test/a.png",
        "file:///etc/passwd",
        "data:image/bmp;base64,Qk0=",
        "data:image/png;base64,@@@@",
        "data:text",
    ],
)
def test_bad_image_urls_are_400_naming_the_part(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}],
                }
            ]
        )
    assert info.value.param == "messages[0].content[1].image_url.url"


def test_unsupported_part_type_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}])
    assert info.value.param == "messages[0].content[0].type"


def test_tool_calls_and_results_pair_up_in_one_user_turn_results_first() -> None:
    body = translate(
        tools=[TOOL],
        messages=[
            user("q"),
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call("c1"), call("c2", args="")]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
            user("and?"),
        ],
    )
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": 1}},
        {"type": "tool_use", "id": "c2", "name": "lookup", "input": {}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "r2"}]},
            {"type": "text", "text": "and?"},
        ],
    }
    assert body["tools"] == [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(("content", "expected"), [("", None), (None, None), ({"ok": True}, '{"ok":true}'), (42, "42")])
def test_tool_result_content_variants(content: Any, expected: str | None) -> None:
    body = translate(
        tools=[TOOL],
        messages=[
            user("q"),
            {"role": "assistant", "tool_calls": [call("c1")]},
            {"role": "tool", "tool_call_id": "c1", "content": content},
        ],
    )
    block = body["messages"][2]["content"][0]
    assert block["tool_use_id"] == "c1"
    assert block.get("content") == expected


def test_unanswered_tool_calls_get_explicit_error_results() -> None:
    body = translate(
        tools=[TOOL],
        messages=[
            user("q"),
            {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
            {"role": "tool", "tool_call_id": "c2", "content": "ok"},
        ],
    )
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c2", "content": "ok"},
        {"type": "tool_result", "tool_use_id": "c1", "content": MISSING_RESULT, "is_error": True},
    ]
    # History cut at the iteration limit: it ends with tool calls.
    body = translate(tools=[TOOL], messages=[user("q"), {"role": "assistant", "tool_calls": [call("c9")]}])
    assert body["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "c9", "content": MISSING_RESULT, "is_error": True}],
    }


def test_orphan_tool_result_becomes_text() -> None:
    body = translate(tools=[TOOL], messages=[user("q"), {"role": "tool", "tool_call_id": "gone", "content": "stale"}])
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "[Result of tool call gone]\nstale"}],
        }
    ]


def test_tool_history_without_tools_gets_minimal_definitions_and_tool_choice_none() -> None:
    body = translate(
        messages=[
            user("q"),
            {"role": "assistant", "tool_calls": [call("c1", "alpha"), call("c2", "beta")]},
            {"role": "tool", "tool_call_id": "c1", "content": "a"},
            {"role": "tool", "tool_call_id": "c2", "content": "b"},
            user("sum up"),
        ]
    )
    assert body["tools"] == [
        {"name": n, "description": HISTORY_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}
        for n in ("alpha", "beta")
    ]
    assert body["tool_choice"] == {"type": "none"}


def test_tool_ids_are_made_safe_consistently() -> None:
    body = translate(
        tools=[TOOL],
        messages=[
            user("q"),
            {"role": "assistant", "tool_calls": [call("fc:1.x")]},
            {"role": "tool", "tool_call_id": "fc:1.x", "content": "r"},
        ],
    )
    assert body["messages"][1]["content"][0]["id"] == "fc_1_x"
    assert body["messages"][2]["content"][0]["tool_use_id"] == "fc_1_x"


@pytest.mark.parametrize("args", ["{bad", "[1, 2]", '"text"'])
def test_invalid_tool_arguments_are_400_not_empty_input(args: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(messages=[user("q"), {"role": "assistant", "tool_calls": [call("c1", args=args)]}])
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_legacy_functions_protocol() -> None:
    body = translate(
        functions=[{"name": "lookup", "parameters": {"type": "object"}}],
        function_call={"name": "lookup"},
        messages=[
            user("q"),
            {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{}"}},
            {"role": "function", "name": "lookup", "content": "found"},
        ],
    )
    use = body["messages"][1]["content"][0]
    assert use["type"] == "tool_use" and use["name"] == "lookup"
    assert body["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": use["id"], "content": "found"}
    assert body["tool_choice"] == {"type": "tool", "name": "lookup"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "lookup"}}, None, {"type": "tool", "name": "lookup"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    request: dict[str, Any] = {"tools": [TOOL], "messages": [user("q")]}
    if choice is not None:
        request["tool_choice"] = choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    assert translate(**request).get("tool_choice") == expected


def test_tool_choice_naming_an_unknown_tool_and_bad_tool_names_are_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}, messages=[user("q")])
    assert info.value.param == "tool_choice"
    bad = {"type": "function", "function": {"name": "has space"}}
    with pytest.raises(InvalidRequest) as info:
        translate(tools=[bad], messages=[user("q")])
    assert info.value.param == "tools[0].function.name"


def test_tool_choice_without_tools_is_ignored() -> None:
    assert "tool_choice" not in translate(tool_choice="required", messages=[user("q")])


def test_sampling_stop_user_and_max_tokens() -> None:
    body = translate(
        messages=[user("q")],
        temperature=1.7,
        top_p=0.5,
        stop=["END", "  ", "\n"],
        user="u-1",
        max_tokens=100,
        max_completion_tokens=200,
    )
    assert body["temperature"] == 1.0
    assert "top_p" not in body  # newer models refuse both together; temperature wins
    assert "stop_sequences" not in translate(messages=[user("q")], stop=" ")
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["max_tokens"] == 200
    assert translate(messages=[user("q")], max_tokens=77)["max_tokens"] == 77
    assert translate(messages=[user("q")], top_p=0.3)["top_p"] == 0.3
    assert translate(messages=[user("q")], stop="STOP")["stop_sequences"] == ["STOP"]


def test_fixed_sampling_models_get_no_sampling_parameters() -> None:
    body = translate(model="claude-opus-4-7", messages=[user("q")], temperature=0.2, top_p=0.9)
    assert "temperature" not in body and "top_p" not in body


def test_default_max_tokens_is_configurable() -> None:
    opts = Settings.from_env({"PROXY_DEFAULT_MAX_TOKENS": "1234"}).conversion_options()
    assert translate(opts, messages=[user("q")])["max_tokens"] == 1234


def test_reasoning_effort_budget_models() -> None:
    body = translate(
        model="claude-sonnet-4-5", messages=[user("q")], reasoning_effort="medium", temperature=0.3, max_tokens=1000
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] > 8192
    assert "temperature" not in body
    assert "thinking" not in translate(model="claude-sonnet-4-5", messages=[user("q")], reasoning_effort="none")


def test_reasoning_effort_adaptive_models() -> None:
    body = translate(model="claude-opus-4-6", messages=[user("q")], reasoning_effort="high")
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "high"}


def test_thinking_is_dropped_where_anthropic_would_refuse_it() -> None:
    # forced tool choice
    body = translate(
        model="claude-sonnet-4-5", tools=[TOOL], tool_choice="required", reasoning_effort="low", messages=[user("q")]
    )
    assert "thinking" not in body and body["tool_choice"] == {"type": "any"}
    # mid tool loop: the last assistant turn has no thinking block to send back
    body = translate(
        model="claude-sonnet-4-5",
        tools=[TOOL],
        reasoning_effort="low",
        messages=[
            user("q"),
            {"role": "assistant", "tool_calls": [call("c1")]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    )
    assert "thinking" not in body


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = translate(
        messages=[user("q")], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": dict(schema, additionalProperties=False)}
    }
    t = to_anthropic(
        ChatRequest.model_validate({"model": "m", "messages": [user("q")], "response_format": {"type": "json_object"}}),
        NO_CACHE,
    )
    assert t.json_tool == "json_response"
    assert t.body["tool_choice"] == {"type": "tool", "name": "json_response", "disable_parallel_tool_use": True}
    # with client tools the answer cannot be forced through a tool: an instruction instead
    body = translate(tools=[TOOL], messages=[user("q")], response_format={"type": "json_object"})
    assert body["system"][-1]["text"] == JSON_INSTRUCTION
    assert translate(messages=[user("q")], response_format={"type": "text"}).get("tools") is None


def test_n_greater_than_one_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        translate(messages=[user("q")], n=3)
    assert info.value.param == "n"
    assert "tools" not in translate(messages=[user("q")], n=1)


def test_prompt_cache_breakpoints() -> None:
    body = translate(OPTS, tools=[TOOL], messages=[{"role": "system", "content": "sys"}, user("q")])
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in repr(translate(NO_CACHE, tools=[TOOL], messages=[user("q")]))


def test_translation_never_mutates_its_input() -> None:
    raw = {
        "model": "claude-sonnet-4-6",
        "tools": [TOOL],
        "messages": [
            {"role": "system", "content": "s"},
            user("q"),
            {"role": "assistant", "tool_calls": [call("c1", args={"a": 1})]},  # type: ignore[dict-item]
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
    }
    request = ChatRequest.model_validate(raw)
    snapshot = copy.deepcopy(request.model_dump())
    first = to_anthropic(request, OPTS).body
    assert request.model_dump() == snapshot
    assert to_anthropic(request, OPTS).body == first


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("anthropic/claude-haiku-4.5", "claude-haiku-4-5"),
        ("openrouter/anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
        ("smart", "claude-opus-4-6"),
        ("anthropic/smart", "claude-opus-4-6"),
        ("", "claude-sonnet-4-6"),
    ],
)
def test_model_names(name: str, expected: str) -> None:
    opts = Options(aliases={"smart": "claude-opus-4-6"}, default_model="claude-sonnet-4-6")
    assert resolve_model(name, opts) == expected


def test_missing_model_without_default_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_model(" ", Options())
    assert info.value.param == "model"


# ---- responses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
        ("some_future_reason", "stop"),
    ],
)
def test_finish_reasons_stay_inside_openais_enum(stop: str | None, finish: str) -> None:
    assert map_finish_reason(stop) == finish


def test_usage_counts_cache_reads_and_writes_and_tolerates_nulls() -> None:
    assert chat_usage(
        {"input_tokens": 3, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 5}
    ) == {
        "prompt_tokens": 113,
        "completion_tokens": 5,
        "total_tokens": 118,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert (
        chat_usage({"input_tokens": None, "output_tokens": None, "cache_read_input_tokens": None})["total_tokens"] == 0
    )
    assert chat_usage(None)["prompt_tokens"] == 0


def anthropic_message(*content: dict[str, Any], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "model": "claude-sonnet-4-6",
        "content": list(content),
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }


def test_response_with_text_thinking_and_tools() -> None:
    out = to_openai(
        anthropic_message(
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {}},
            {"type": "server_tool_use_future", "id": "x"},
            stop="tool_use",
        ),
        model="m",
        created=5,
    )
    assert out["id"] == "chatcmpl-msg_1" and out["created"] == 5 and out["model"] == "claude-sonnet-4-6"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling."
    assert choice["message"]["reasoning_content"] == "hmm"
    assert [c["function"]["arguments"] for c in choice["message"]["tool_calls"]] == ['{"q":"x"}', "{}"]
    assert re.fullmatch(r"toolu_\d", choice["message"]["tool_calls"][0]["id"])


def test_response_tool_only_has_null_content_and_empty_has_empty_string() -> None:
    out = to_openai(
        anthropic_message({"type": "tool_use", "id": "t", "name": "f", "input": {}}, stop="tool_use"),
        model="m",
        created=0,
    )
    assert out["choices"][0]["message"]["content"] is None
    out = to_openai(anthropic_message(stop="refusal"), model="m", created=0)
    assert out["choices"][0]["message"]["content"] == ""
    assert out["choices"][0]["finish_reason"] == "content_filter"


def test_json_tool_answer_becomes_content() -> None:
    out = to_openai(
        anthropic_message(
            {"type": "text", "text": "Here you go:"},
            {"type": "tool_use", "id": "t", "name": "json_response", "input": {"a": [1]}},
            stop="tool_use",
        ),
        model="m",
        created=0,
        json_tool="json_response",
    )
    assert out["choices"][0]["message"]["content"] == '{"a":[1]}'
    assert out["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in out["choices"][0]["message"]


def test_json_tool_answer_wins_over_text_after_it() -> None:
    out = to_openai(
        anthropic_message(
            {"type": "tool_use", "id": "t", "name": "json_response", "input": {"a": 1}},
            {"type": "text", "text": "trailing"},
            stop="tool_use",
        ),
        model="m",
        created=0,
        json_tool="json_response",
    )
    assert out["choices"][0]["message"]["content"] == '{"a":1}'


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
