"""Response translation, pure: every Anthropic message shape into an OpenAI chat completion, finish reasons and usage
included, without I/O."""

import re
from typing import Any

import pytest

from claude_proxy.convert.response import to_openai
from claude_proxy.convert.tables import chat_usage
from claude_proxy.convert.tables import finish_reason as map_finish_reason


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
