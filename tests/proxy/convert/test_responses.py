"""The Responses API translation, pure: requests into Anthropic requests and messages into Response objects, every
Response validated with the official openai SDK's own pydantic model. The stream translator is tested in
test_responses_stream.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_proxy.convert.request import Options
from claude_proxy.convert.responses import ResponsesRequest, to_anthropic_request, to_response
from claude_proxy.errors import InvalidRequest
from tests.fakes.anthropic import message, text, thinking, tool_use
from tests.proxy.convert.responses_support import CREATED, MODEL, OPTIONS, echo_of, response_for

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def body_of(payload: dict[str, Any], options: Options = OPTIONS) -> dict[str, Any]:
    return to_anthropic_request(ResponsesRequest.model_validate({"model": MODEL, **payload}), options).translation.body


def refusal(payload: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        body_of(payload)
    return info.value


# ---- requests --------------------------------------------------------------------------------------------------------


def test_string_input_with_instructions_and_parameters() -> None:
    body = body_of(
        {"input": "Say hi", "instructions": "Be brief.", "max_output_tokens": 55, "temperature": 0.3, "store": True}
    )
    assert body["system"][0]["text"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hi", "cache_control": {"type": "ephemeral"}}]}
    ]
    assert body["max_tokens"] == 55
    assert body["temperature"] == 0.3


def test_items_messages_images_calls_and_outputs() -> None:
    body = body_of(
        {
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in it, and the weather?"},
                        {"type": "input_image", "image_url": PNG, "detail": "auto"},
                        {"type": "input_image", "image_url": "https://example.com/a.png"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hidden"}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_a", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": '{"city":"Rome"}'},
                {"type": "function_call_output", "call_id": "call_a", "output": "rain"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [{"type": "input_text", "text": "sun"}],
                },
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": False}],
        }
    )
    assert body["system"][0]["text"] == "Use tools."
    user, assistant, results = body["messages"]
    assert [b["type"] for b in user["content"]] == ["text", "image", "image"]
    assert user["content"][1]["source"]["type"] == "base64"
    assert user["content"][2]["source"] == {"type": "url", "url": "https://example.com/a.png"}
    assert assistant["content"][0]["text"] == "Checking."
    assert [(b["id"], b["input"]) for b in assistant["content"][1:]] == [
        ("call_a", {"city": "Oslo"}),
        ("call_b", {"city": "Rome"}),
    ]
    assert [(b["tool_use_id"], b["content"]) for b in results["content"]] == [
        ("call_a", "rain"),
        ("call_b", [{"type": "text", "text": "sun"}]),
    ]
    assert "hidden" not in json.dumps(body)


def test_function_tools_are_flat_and_strict_is_kept() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    body = body_of(
        {
            "input": "go",
            "tools": [
                {"type": "function", "name": "count", "description": "Count.", "parameters": schema, "strict": True}
            ],
        }
    )
    (tool,) = body["tools"]
    assert tool["name"] == "count" and tool["description"] == "Count." and tool["strict"] is True
    assert '"minimum"' not in json.dumps(tool["input_schema"])
    assert tool["input_schema"]["properties"]["n"]["description"] == "{minimum: 1}"
    assert tool["input_schema"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "name": "count"}, None, {"type": "tool", "name": "count"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "name": "count", "parameters": {"type": "object"}}]
    payload: dict[str, Any] = {"input": "go", "tools": tools, "tool_choice": choice}
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert body_of(payload)["tool_choice"] == expected


def test_text_format_json_schema_goes_through_the_schema_transform() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "maximum": 150}}, "required": ["age"]}
    body = body_of({"input": "age?", "text": {"format": {"type": "json_schema", "name": "A", "schema": schema}}})
    sent = body["output_config"]["format"]
    assert sent["type"] == "json_schema"
    assert '"maximum"' not in json.dumps(sent["schema"]) and "{maximum: 150}" in json.dumps(sent["schema"])


def test_text_format_json_object_and_text() -> None:
    body = body_of({"input": "json", "text": {"format": {"type": "json_object"}}})
    assert body["tool_choice"]["name"] == "json_response"
    plain = body_of({"input": "hi", "text": {"format": {"type": "text"}}})
    assert "tools" not in plain and "output_config" not in plain


def test_reasoning_effort_is_mapped_like_chat() -> None:
    adaptive = body_of({"input": "think", "reasoning": {"effort": "high", "summary": "auto"}})
    assert adaptive["thinking"] == {"type": "adaptive"} and adaptive["output_config"]["effort"] == "high"
    budget = body_of({"model": "claude-haiku-4-5", "input": "think", "reasoning": {"effort": "low"}})
    assert budget["thinking"] == {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
    ],
)
def test_state_is_refused_with_a_400_saying_to_send_the_full_input(payload: dict[str, Any], param: str) -> None:
    exc = refusal({"input": "hi", **payload})
    assert exc.status == 400 and exc.param == param
    assert "send the whole conversation in `input`" in exc.message


@pytest.mark.parametrize("kind", ["web_search", "file_search", "computer_use_preview", "code_interpreter", "mcp"])
def test_built_in_tools_are_refused_naming_the_type(kind: str) -> None:
    exc = refusal({"input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": kind}]})
    assert exc.param == "tools[1].type" and repr(kind) in exc.message


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]}, "tools[0].parameters"),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
            "tool_choice",
        ),
    ],
)
def test_bad_tools_are_named_by_their_responses_field(payload: dict[str, Any], param: str) -> None:
    assert refusal({"input": "hi", **payload}).param == param


def test_item_references_become_the_kept_items_in_their_place() -> None:
    """A reference is replaced by the item the lookup finds, where it stood: the kept text and a function_call
    sent in full join one assistant turn, and a kept reasoning item stands for nothing."""
    kept = {
        "rs_m_0": {"type": "reasoning", "summary": []},
        "msg_m_1": to_response(message(text("Let me look.")), model=MODEL, created_at=CREATED, echo={})["output"][0],
    }
    request = {
        "input": [
            {"role": "user", "content": "Where is order 4?"},
            {"type": "item_reference", "id": "rs_m_0"},
            {"type": "item_reference", "id": "msg_m_1"},
            {"type": "function_call", "call_id": "toolu_1", "name": "lookup", "arguments": '{"order_id": 4}'},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "shipped"},
        ]
    }
    body = to_anthropic_request(ResponsesRequest.model_validate({"model": MODEL, **request}), OPTIONS, kept.get)
    turns = body.translation.body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [(b["type"], b.get("text") or b.get("name")) for b in turns[1]["content"]] == [
        ("text", "Let me look."),
        ("tool_use", "lookup"),
    ]
    assert turns[2]["content"][0]["tool_use_id"] == "toolu_1"


@pytest.mark.parametrize(
    ("reference", "param", "words"),
    [
        ({"type": "item_reference", "id": "msg_gone_0"}, "input[1].id", "'msg_gone_0' is not (or no longer) held"),
        ({"type": "item_reference"}, "input[1].id", "need an id"),
    ],
)
def test_an_item_reference_the_lookup_does_not_know_is_named(reference: dict[str, Any], param: str, words: str) -> None:
    request = ResponsesRequest.model_validate({"model": MODEL, "input": [{"role": "user", "content": "hi"}, reference]})
    with pytest.raises(InvalidRequest) as info:
        to_anthropic_request(request, OPTIONS, {}.get)
    assert info.value.param == param and words in info.value.message
    if "id" in reference:
        assert "send the full item" in info.value.message and "`store: false`" in info.value.message


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}], "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}], "input[0].content[0].file_data"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}], "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_file", "filename": "a"}]}], "input[0].content[0].file_data"),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_data": "data:image/gif;base64,R0lG"}]}],
            "input[0].content[0].file_data",
        ),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_url": "http://x.test/a.pdf"}]}],
            "input[0].content[0].file_url",
        ),
        (
            [{"role": "assistant", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,"}]}],
            "input[0].content[0].type",
        ),
        ([{"type": "item_reference", "id": "msg_1"}], "input[0].type"),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type"),
        (
            [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"},
            ],
            "input[1].arguments",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "ftp://x"}],
                }
            ],
            "input[0].content[1].image_url.url",
        ),
    ],
)
def test_bad_items_are_named_by_their_input_field(items: list[Any], param: str) -> None:
    assert refusal({"input": items}).param == param


def test_input_files_become_documents() -> None:
    pdf = "JVBERi0xLjQK"  # %PDF-1.4
    body = body_of(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Compare"},
                        {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"},
                        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
                    ],
                }
            ]
        }
    )
    assert body["messages"][0]["content"][1:] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
            "title": "a.pdf",
        },
        {
            "type": "document",
            "source": {"type": "url", "url": "https://example.com/b.pdf"},
            "cache_control": {"type": "ephemeral"},
        },
    ]


def test_the_echo_repeats_the_request() -> None:
    echo = echo_of(
        {
            "input": "hi",
            "instructions": "Be brief.",
            "metadata": {"k": "v"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
            "tool_choice": "required",
            "text": {"format": {"type": "json_object"}},
            "reasoning": {"effort": "low"},
        }
    )
    assert echo["instructions"] == "Be brief." and echo["metadata"] == {"k": "v"}
    assert echo["tools"][0]["name"] == "f" and echo["tool_choice"] == "required"
    assert echo["text"] == {"format": {"type": "json_object"}} and echo["reasoning"]["effort"] == "low"


# ---- responses -------------------------------------------------------------------------------------------------------


def test_message_becomes_reasoning_message_and_function_call_items() -> None:
    usage = {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
    msg = message(
        thinking("Plan."), text("Let me look."), tool_use("toolu_9", "weather", {"city": "Oslo"}),
        stop_reason="tool_use", usage=usage, model=MODEL, id="msg_01abc",
    )  # fmt: skip
    response = response_for(msg)
    assert response.id == "resp_01abc" and response.object == "response" and response.status == "completed"
    reasoning, said, call = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Plan."
    assert said.type == "message" and said.content[0].type == "output_text" and said.content[0].text == "Let me look."
    assert said.content[0].annotations == []
    assert call.type == "function_call" and call.call_id == "toolu_9" and json.loads(call.arguments) == {"city": "Oslo"}
    assert response.output_text == "Let me look."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (115, 20, 135)
    assert response.usage.input_tokens_details.cached_tokens == 100
    assert response.usage.output_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(("stop", "reason"), [("max_tokens", "max_output_tokens"), ("refusal", "content_filter")])
def test_cut_answers_are_incomplete(stop: str, reason: str) -> None:
    response = response_for(message(text("Once upon"), stop_reason=stop))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason


def test_json_object_answer_is_the_tool_input_as_text() -> None:
    msg = message(text("ignored"), tool_use("toolu_j", "json_response", {"a": 1}), stop_reason="tool_use")
    response = response_for(msg, json_tool="json_response")
    assert [item.type for item in response.output] == ["message"]
    assert json.loads(response.output_text) == {"a": 1}


# ---- streams ---------------------------------------------------------------------------------------------------------
