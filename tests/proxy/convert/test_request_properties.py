"""Property tests over the request path's pure part: any JSON object a client sends either becomes an Anthropic
request the strict fake accepts, or an InvalidRequest (a 400) naming the offending field — never another exception.

Two generators: realistic-but-messy chat requests (every role, content shapes, tool calls and results in odd orders,
missing results, bad ids, empty and whitespace strings, unicode, extra fields, out-of-range parameters), and fully
random JSON. Runs are derandomized, so CI sees the same examples every time; raise `max_examples` locally to explore.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from claude_proxy.config import Settings
from claude_proxy.convert.request import Options, to_anthropic
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.errors import InvalidRequest
from claude_proxy.server.body import validation_error as _validation_error
from tests.fakes.anthropic import Reject, validate_messages_request
from tests.paths import FIXTURES

OPTIONS = Settings(default_model=None).conversion_options()
OPTIONS_WITH_DEFAULT = Settings(default_model="claude-sonnet-4-6").conversion_options()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
PDF = base64.b64encode((FIXTURES / "documents" / "invoice.pdf").read_bytes()).decode()


def outcome(payload: Any, options: Options = OPTIONS) -> dict[str, Any] | InvalidRequest:
    """What the app does with a parsed JSON body before any I/O."""
    if not isinstance(payload, dict):
        return InvalidRequest("request body must be a JSON object", param="body")
    try:
        chat = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        return _validation_error(exc)
    try:
        return to_anthropic(chat, options).body
    except InvalidRequest as exc:
        return exc


def check(payload: Any, options: Options = OPTIONS) -> str:
    """Assert the property for one body; returns "ok" or "400" (the tests check both kinds occur)."""
    result = outcome(orjson.loads(orjson.dumps(payload)), options)
    if isinstance(result, InvalidRequest):
        assert result.status == 400
        assert result.param, f"400 without the offending field: {result.message!r}"
        return "400"
    orjson.dumps(result)  # serialisable as it is sent
    model = result["model"]
    try:
        validate_messages_request(result, fixed_sampling=bool(options.fixed_sampling.search(model)))
    except Reject as rej:
        raise AssertionError(f"the proxy built a request Anthropic refuses: {rej.message}") from None
    return "ok"


def run_property(strategy: st.SearchStrategy[Any], examples: int, options: Options = OPTIONS) -> Counter[str]:
    """Check the property over `examples` derandomized examples; returns how many were ok and how many 400."""
    kinds: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def run(payload: Any) -> None:
        kinds[check(payload, options)] += 1

    run()
    return kinds


# ---- realistic but messy requests ----------------------------------------------------------------------------------

messy_text = st.one_of(
    st.sampled_from(["", " ", "\n\t", "hello", "ça va? 日本語 🎉", "\u0000", "a" * 300, "{}", "null"]),
    st.text(max_size=20),
)
ids = st.one_of(
    st.sampled_from(["call_1", "call_2", "toolu_01A", "", "bad id!", "call.1", "ü", "x" * 70]), st.text(max_size=8)
)
tool_names = st.sampled_from(["get_weather", "lookup", "json_response", "bad name", "", "x" * 130, "f", "café"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | messy_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
image_urls = st.sampled_from(
    [
        f"data:image/png;base64,{PNG}",
        "data:image/png;base64,!!!notbase64",
        "data:image/bmp;base64,AAAA",
        "data:text/plain;base64,aGk=",
        "https://example.com/cat.png",
        "http://example.com/cat.png",
        "ftp://x",
        "",
    ]
)
file_fields = st.sampled_from(["filename", "file_data", "file_url", "file_id"])
file_values = st.one_of(
    st.sampled_from(
        [
            f"data:application/pdf;base64,{PDF}",
            PDF,
            "data:text/plain;base64,aGVsbG8=",
            "data:text/plain;base64,//4=",
            "data:application/pdf;base64,@@",
            "data:image/png;base64,iVBORw0K",
            "https://example.com/a.pdf",
            "a.txt",
            "file-abc",
            "",
        ]
    ),
    json_values,
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": messy_text}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": image_urls})}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": image_urls}),
    st.fixed_dictionaries({"type": st.sampled_from(["input_audio", "file", "refusal", "video", ""])}),
    st.fixed_dictionaries({"type": st.just("file"), "file": st.dictionaries(file_fields, file_values, max_size=3)}),
    st.fixed_dictionaries({"type": st.just("file"), "file": json_values}),
    st.fixed_dictionaries({"type": st.just("text")}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), json_values, max_size=3),
)
good_text = st.sampled_from(["hello", "What is the weather in Paris?", "ça va? 日本語 🎉", "  padded  ", "x"])
good_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": good_text}), min_size=1, max_size=2)
contents = st.one_of(good_text, good_text, good_parts, messy_text, st.lists(parts, max_size=3), st.none(), json_values)
arguments = st.one_of(
    st.sampled_from(['{"city": "Paris"}', "{}", "", "[1, 2]", "not json", "null", '{"a": {"b": [1]}}', '"str"']),
    st.dictionaries(st.text(max_size=4), json_values, max_size=2),
    st.none(),
)
good_arguments = st.sampled_from(['{"city": "Paris"}', "{}", "", None, '{"q": ["a", 1, null]}'])
tool_calls = st.fixed_dictionaries(
    {
        "id": ids,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": tool_names, "arguments": arguments}),
    }
)
extra = st.dictionaries(
    st.sampled_from(["name", "cache_control", "annotations", "refusal", "audio", "x_extra"]), json_values, max_size=2
)


def _with(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda b, e: {**e, **b}, base, extra)


good_messages = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "user", "assistant", "system"]), "content": good_text}),
    st.fixed_dictionaries({"role": st.just("user"), "content": good_parts}),
)
messages = st.one_of(
    good_messages,
    good_messages,
    good_messages,
    _with(st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": contents})),
    _with(st.fixed_dictionaries({"role": st.just("user"), "content": contents})),
    _with(st.fixed_dictionaries({"role": st.just("assistant"), "content": contents})),
    _with(
        st.fixed_dictionaries(
            {"role": st.just("assistant"), "tool_calls": st.lists(tool_calls, max_size=3)},
            optional={"content": contents},
        )
    ),
    _with(
        st.fixed_dictionaries(
            {"role": st.just("assistant")},
            optional={"function_call": st.fixed_dictionaries({"name": tool_names, "arguments": arguments})},
        )
    ),
    _with(st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": ids, "content": contents})),
    _with(st.fixed_dictionaries({"role": st.just("function"), "name": tool_names, "content": contents})),
    st.one_of(
        st.fixed_dictionaries({"role": st.sampled_from(["bogus", "", "USER"]), "content": contents}), json_values
    ),
)
schemas = st.one_of(
    st.just({"type": "object", "properties": {"city": {"type": "string"}}}),
    st.just({"type": "object"}),
    st.just({"type": "array"}),
    st.just({}),
    st.none(),
    json_values,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": tool_names}, optional={"parameters": schemas}),
        }
    ),
    max_size=3,
)
tool_choice = st.one_of(
    st.sampled_from(["auto", "none", "required", "any", ""]),
    st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": tool_names})}),
    json_values,
)
response_format = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema", "yaml"])}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries({"name": messy_text}, optional={"schema": schemas}),
        }
    ),
)
good_numbers = st.one_of(st.integers(1, 64_000), st.floats(0, 1, allow_nan=False))
numbers = st.one_of(good_numbers, good_numbers, st.integers(-5, 300_000), st.floats(-3, 3, allow_nan=False), st.none())
MODELS = ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5", "anthropic/claude-haiku-4.5", "claude-3-7-sonnet"]
models = st.sampled_from([*MODELS, "claude-sonnet-4-5", "claude-opus-4-6", "", " ", "gpt-4o"])
requests = st.fixed_dictionaries(
    {
        "model": models,
        "messages": st.lists(messages, min_size=1, max_size=6),
    },
    optional={
        "x_vendor_field": json_values,
        "max_tokens": numbers,
        "max_completion_tokens": numbers,
        "temperature": numbers,
        "top_p": numbers,
        "stop": st.one_of(messy_text, st.lists(messy_text, max_size=18), st.none()),
        "stream": st.one_of(st.booleans(), st.none()),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), json_values),
        "tools": st.one_of(tools, st.none()),
        "functions": st.lists(
            st.fixed_dictionaries({"name": tool_names}, optional={"parameters": schemas}), max_size=2
        ),
        "tool_choice": tool_choice,
        "function_call": st.one_of(st.sampled_from(["auto", "none"]), st.fixed_dictionaries({"name": tool_names})),
        "parallel_tool_calls": st.one_of(st.booleans(), st.none()),
        "response_format": response_format,
        "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max", None]),
        "user": st.one_of(messy_text, st.none()),
        "n": numbers,
        "metadata": json_values,
        "seed": numbers,
        "logprobs": st.booleans(),
    },
)


def test_messy_requests_become_valid_anthropic_requests_or_named_400s() -> None:
    kinds = run_property(requests, 700)
    # both sides of the property were exercised (the split moves a little with what else the run has loaded)
    assert kinds["ok"] >= 50 and kinds["400"] >= 100, kinds


def test_with_a_default_model_too() -> None:
    assert run_property(requests, 150, OPTIONS_WITH_DEFAULT)["ok"] >= 10


# ---- conversations that are well formed except for their tool history ----------------------------------------------

ROUND_IDS = ["call_a", "call_b", "call_c"]


@st.composite
def tool_histories(draw: st.DrawFn) -> dict[str, Any]:
    """Valid-looking agent loops with calls and results shuffled, dropped, duplicated or orphaned."""
    history: list[dict[str, Any]] = [{"role": "user", "content": draw(st.sampled_from(["go", "ça", "日本"]))}]
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 3))
        calls = [
            {
                "id": draw(st.sampled_from([*ROUND_IDS, "call_a", "bad id", ""])),
                "type": "function",
                "function": {
                    "name": draw(st.sampled_from(["get_weather", "lookup"])),
                    "arguments": draw(st.one_of(good_arguments, good_arguments, arguments)),
                },
            }
            for _ in range(n)
        ]
        turn: dict[str, Any] = {"role": "assistant", "content": draw(st.sampled_from([None, "", "thinking aloud"]))}
        if calls:
            turn["tool_calls"] = calls
        history.append(turn)
        results = [
            {
                "role": "tool",
                "tool_call_id": draw(st.sampled_from([*ROUND_IDS, "call_zzz", ""])),
                "content": draw(contents),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
        history.extend(draw(st.permutations(results)))
        if draw(st.booleans()):
            history.append(
                {"role": draw(st.sampled_from(["user", "system", "assistant"])), "content": draw(messy_text)}
            )
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "messages": history}
    if draw(st.booleans()):
        body["tools"] = [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
        ][: draw(st.integers(0, 2))]
    if draw(st.booleans()):
        body["reasoning_effort"] = draw(st.sampled_from(["low", "high"]))
    if draw(st.booleans()):
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", "none"]))
    return body


def test_tool_histories_in_odd_orders() -> None:
    kinds = run_property(tool_histories(), 500)
    assert kinds["ok"] >= 100 and kinds["400"] >= 20, kinds


# ---- fully random JSON ---------------------------------------------------------------------------------------------

keys = st.one_of(
    st.sampled_from(["model", "messages", "role", "content", "tools", "tool_calls", "function", "type", "stream", "n"]),
    st.text(max_size=6),
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def test_random_json_objects() -> None:
    objects = st.dictionaries(keys, anything, max_size=6).filter(_is_json)
    assert sum(run_property(objects, 300).values()) == 300


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # NaN/huge ints cannot arrive as JSON anyway
        return False
    return True


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "user", "content": "x"}]},  # no model and no default
        {"model": "m", "messages": []},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
    ],
)
def test_known_400s_name_their_field(payload: dict[str, Any]) -> None:
    result = outcome(payload)
    assert isinstance(result, InvalidRequest) and result.param
