"""Property tests over the Responses request path's pure part: any JSON object a client sends to /v1/responses either
becomes an Anthropic request the strict fake accepts, or an InvalidRequest (a 400) naming the offending field —
never another exception. Derandomized, like the chat properties."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from claude_proxy.config import Settings
from claude_proxy.convert.responses import ResponsesRequest, to_anthropic_request
from claude_proxy.errors import InvalidRequest
from claude_proxy.server.body import validation_error as _validation_error
from tests.fakes.anthropic import Reject, validate_messages_request
from tests.paths import FIXTURES

OPTIONS = Settings(default_model=None).conversion_options()
PDF = base64.b64encode((FIXTURES / "documents" / "invoice.pdf").read_bytes()).decode()
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

words = st.sampled_from(["", " ", "hi", "Ünïcode ✓", "call_1", "toolu_2", "f", "g", "{}", '{"a": 1}', "[1]", "{"])
call_ids = st.sampled_from(["call_1", "call_2", "", "bad id!"])
parts = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "refusal"]), "text": words}),
    st.fixed_dictionaries(
        {"type": st.just("input_image"), "image_url": st.sampled_from([PNG, "https://x/a.png", "ftp://x"])}
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["input_file", "input_audio", "weird"])}),
    st.fixed_dictionaries(
        {
            "type": st.just("input_file"),
            "filename": st.sampled_from(["a.pdf", "b.txt", ""]),
            "file_data": st.sampled_from([f"data:application/pdf;base64,{PDF}", PDF, "aGk=", "", "x"]),
        }
    ),
    st.fixed_dictionaries({"type": st.just("input_file"), "file_url": st.sampled_from(["https://x/a.pdf", "ftp://x"])}),
)
items = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
            "content": st.one_of(words, st.lists(parts, max_size=3)),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call"),
            "call_id": call_ids,
            "name": st.sampled_from(["f", "g", "bad name"]),
            "arguments": words,
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call_output"),
            "call_id": call_ids,
            "output": st.one_of(words, st.lists(parts, max_size=2)),
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["reasoning", "item_reference", "web_search_call"])}),
)
tools = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.just("function"),
                "name": st.sampled_from(["f", "g", "bad name"]),
                "strict": st.booleans(),
                "parameters": st.sampled_from(
                    [
                        {"type": "object"},
                        {"type": "string"},
                        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}},
                    ]
                ),
            }
        ),
        st.fixed_dictionaries({"type": st.sampled_from(["web_search", "file_search"])}),
    ),
    max_size=3,
)
requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", ""]),
        "input": st.one_of(words, st.lists(items, max_size=6)),
    },
    optional={
        "instructions": words,
        "tools": tools,
        "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}, {"type": "x"}]),
        "parallel_tool_calls": st.booleans(),
        "text": st.sampled_from(
            [
                {"format": {"type": "json_object"}},
                {"format": {"type": "text"}},
                {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
                {"format": {"type": "yaml"}},
            ]
        ),
        "reasoning": st.sampled_from([{"effort": "low"}, {"effort": "high", "summary": "auto"}, {"effort": "huge"}]),
        "max_output_tokens": st.integers(-1, 5000),
        "temperature": st.floats(-1, 3),
        "previous_response_id": st.sampled_from(["resp_1", None]),
    },
)


def outcome(payload: Any) -> dict[str, Any] | InvalidRequest:
    if not isinstance(payload, dict):
        return InvalidRequest("request body must be a JSON object", param="body")
    try:
        req = ResponsesRequest.model_validate(payload)
    except ValidationError as exc:
        return _validation_error(exc)
    try:
        return to_anthropic_request(req, OPTIONS).translation.body
    except InvalidRequest as exc:
        return exc


def check(payload: Any) -> str:
    result = outcome(orjson.loads(orjson.dumps(payload)))
    if isinstance(result, InvalidRequest):
        assert result.status == 400 and result.param, f"400 without the offending field: {result.message!r}"
        return "400"
    try:
        validate_messages_request(result)
    except Reject as rej:
        raise AssertionError(f"the proxy built a request Anthropic refuses: {rej.message}") from None
    return "ok"


def run_property(strategy: st.SearchStrategy[Any], examples: int) -> Counter[str]:
    """Check the property over `examples` derandomized examples; returns how many were ok and how many 400."""
    kinds: Counter[str] = Counter()

    @settings(max_examples=examples, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def run(payload: Any) -> None:
        kinds[check(payload)] += 1

    run()
    return kinds


random_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["input", "model", "tools", "type", "role", "content", "text"]), c, max_size=4
        )
    ),
)


def test_any_responses_request_is_accepted_or_a_named_400() -> None:
    kinds = run_property(requests, 400)
    assert kinds["ok"] > 0 and kinds["400"] > 0, kinds  # both sides of the property were exercised


def test_random_json_is_accepted_or_a_named_400() -> None:
    kinds = run_property(random_json, 200)
    assert kinds["400"] > 0, kinds  # (almost all random JSON is refused: the structured requests above reach "ok")
