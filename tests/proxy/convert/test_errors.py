"""Upstream error mapping: status, type, request id, retry hints and the context-overflow rewrite."""

from __future__ import annotations

import re

import httpx

from claude_proxy.convert.errors import upstream_error


def body(etype: str, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_body"}


def test_context_overflow_rewrite_matches_openai_wording_and_rockbots_parser() -> None:
    err = upstream_error(400, body("invalid_request_error", "prompt is too long: 212345 tokens > 200000 maximum"), None)
    assert err.status == 400 and err.code == "context_length_exceeded" and err.param == "messages"
    # The pattern OpenAI clients use to trim and retry.
    match = re.search(r"maximum context length is (\d+) tokens.*resulted in (\d+) tokens", err.message)
    assert match and match.groups() == ("200000", "212345")


def test_request_id_and_retry_hints() -> None:
    headers = httpx.Headers({"request-id": "req_hdr", "retry-after-ms": "2500"})
    err = upstream_error(429, body("rate_limit_error", "slow down"), headers)
    assert err.request_id == "req_hdr" and "req_hdr" in err.message
    assert err.headers["retry-after"] == "2" or err.headers["retry-after"] == "3"
    assert err.type == "rate_limit_error" and err.code == "rate_limit_error"
    err = upstream_error(429, body("rate_limit_error", "x"), httpx.Headers({"retry-after": "11"}))
    assert err.headers["retry-after"] == "11" and err.request_id == "req_body"


def test_non_json_and_unknown_error_bodies() -> None:
    err = upstream_error(502, b"<html>Bad Gateway</html>", httpx.Headers({}))
    assert err.status == 502 and err.type == "server_error" and "HTTP 502" in err.message
    err = upstream_error(418, {"error": {"type": "teapot_error", "message": "short and stout"}}, None)
    assert err.status == 418 and err.type == "invalid_request_error" and err.code == "teapot_error"
    assert err.envelope() == {
        "error": {"message": "short and stout", "type": "invalid_request_error", "param": None, "code": "teapot_error"}
    }
