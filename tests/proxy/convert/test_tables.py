"""The conversion tables: an Anthropic error, stop reason or usage object means the same on every path."""

from __future__ import annotations

from typing import Any

import pytest

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.convert.errors import upstream_error
from claude_proxy.convert.response import to_openai
from claude_proxy.convert.responses_stream import ResponsesStreamTranslator
from claude_proxy.convert.tables import ERROR_TYPES, FINISH_REASONS, USAGE_KEYS, chat_usage, responses_usage
from claude_proxy.errors import UpstreamError
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.metrics import Metrics
from claude_proxy.server.routes.messages import anthropic_envelope, anthropic_status

MODEL = "claude-sonnet-4-6"

# Written out, not read from the table: what each Anthropic error becomes for an OpenAI client: its type, the status
# Anthropic sends it with, the status an OpenAI client sees (529 is 503; a refused credential is 403), and its type
# back in Anthropic's shape (the /v1/messages passthrough).
REFUSED = "upstream_credential_refused"
EXPECTED_ERRORS = {
    "invalid_request_error": ("invalid_request_error", 400, 400, "invalid_request_error"),
    "authentication_error": (REFUSED, 401, 403, "permission_error"),
    "billing_error": ("insufficient_quota", 402, 402, "billing_error"),
    "permission_error": (REFUSED, 403, 403, "permission_error"),
    "not_found_error": ("not_found_error", 404, 404, "not_found_error"),
    "request_too_large": ("invalid_request_error", 413, 413, "request_too_large"),
    "rate_limit_error": ("rate_limit_error", 429, 429, "rate_limit_error"),
    "api_error": ("server_error", 500, 500, "api_error"),
    "timeout_error": ("timeout_error", 504, 504, "timeout_error"),
    "overloaded_error": ("overloaded_error", 529, 503, "overloaded_error"),
}


def _in_stream(translator: StreamTranslator | ResponsesStreamTranslator, etype: str) -> UpstreamError:
    start = {"type": "message_start", "message": {"id": "msg_1", "model": MODEL, "usage": {"input_tokens": 1}}}
    translator.feed(start)
    with pytest.raises(UpstreamError) as raised:
        translator.feed({"type": "error", "error": {"type": etype, "message": "went wrong"}})
    return raised.value


def test_every_anthropic_error_type_is_in_the_table() -> None:
    assert set(ERROR_TYPES) == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("etype", sorted(EXPECTED_ERRORS))
def test_an_error_means_the_same_as_an_http_answer_and_in_either_stream(etype: str) -> None:
    openai_type, status, seen, anthropic_type = EXPECTED_ERRORS[etype]
    body = {"type": "error", "error": {"type": etype, "message": "went wrong"}}
    answered = upstream_error(status, body, {})
    chat = _in_stream(StreamTranslator(model=MODEL, created=1, include_usage=False), etype)
    responses = _in_stream(ResponsesStreamTranslator(model=MODEL, created_at=1, echo={}, json_tool=None), etype)
    for error in (answered, chat, responses):
        assert (error.status, error.type, error.upstream_type) == (seen, openai_type, etype)
        assert error.upstream_status == status
        assert error.envelope()["error"]["type"] == openai_type
        # and back in Anthropic's shape (the /v1/messages passthrough): the type Anthropic sent, with its status
        assert anthropic_envelope(error)["error"]["type"] == anthropic_type
        assert anthropic_status(error) == (seen if openai_type == REFUSED else status)


def test_an_unknown_error_type_goes_by_status() -> None:
    body = {"error": {"type": "brand_new_error", "message": "x"}}
    assert upstream_error(503, body, {}).type == "server_error"
    assert upstream_error(520, body, {}).status == 502  # a 5xx the OpenAI SDKs do not share: a gateway's 502
    assert upstream_error(422, body, {}).type == "invalid_request_error"
    chat = _in_stream(StreamTranslator(model=MODEL, created=1, include_usage=False), "brand_new_error")
    assert (chat.status, chat.type) == (500, "server_error")


@pytest.mark.parametrize("stop", [*sorted(FINISH_REASONS), None, "something_new"])
def test_a_stop_reason_finishes_a_stream_as_it_finishes_a_message(stop: str | None) -> None:
    message = {"id": "msg_1", "model": MODEL, "content": [{"type": "text", "text": "hi"}], "stop_reason": stop}
    message["usage"] = {"input_tokens": 1, "output_tokens": 1}
    whole = to_openai(message, model=MODEL, created=1)["choices"][0]["finish_reason"]
    translator = StreamTranslator(model=MODEL, created=1, include_usage=False)
    chunks: list[dict[str, Any]] = []
    for event in (
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ):
        chunks.extend(translator.feed(event))
    streamed = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert streamed == [whole]
    # (a `tool_use` stop with no tool call in the message finishes as `stop`: there is no call to make)
    expected = {"max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "content_filter"}
    assert whole == expected.get(stop or "", "stop")


def test_usage_is_counted_alike_by_both_apis_the_metrics_and_the_access_line() -> None:
    usage = {"input_tokens": 7, "output_tokens": 5, "cache_read_input_tokens": 11, "cache_creation_input_tokens": 13}
    assert set(usage) == set(USAGE_KEYS)
    chat = chat_usage(usage)
    assert (chat["prompt_tokens"], chat["completion_tokens"], chat["total_tokens"]) == (31, 5, 36)
    assert chat["prompt_tokens_details"] == {"cached_tokens": 11}
    responses = responses_usage(usage)
    assert (responses["input_tokens"], responses["output_tokens"], responses["total_tokens"]) == (31, 5, 36)
    assert responses["input_tokens_details"] == {"cached_tokens": 11, "cache_write_tokens": 13}
    info = RequestInfo("req_1")
    info.add_usage(usage)
    info.add_usage({**usage, "output_tokens": True, "input_tokens": -3})  # a bool or a negative count is no count
    assert (info.input_tokens, info.output_tokens, info.cache_read_tokens, info.cache_write_tokens) == (7, 5, 22, 26)
    metrics = Metrics()
    metrics.usage(MODEL, usage)
    rendered = metrics.render().decode()
    for kind, value in (("input", 7), ("output", 5), ("cache_read", 11), ("cache_write", 13)):
        assert f'proxy_tokens_total{{kind="{kind}",model="{MODEL}"}} {value}.0' in rendered
