"""Upstream error mapping: status, type, request id, retry hints and the context-overflow rewrite."""

from __future__ import annotations

import re

import httpx
import pytest

from claude_proxy.convert.errors import credential_refusal, upstream_error


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


@pytest.mark.parametrize(
    ("status", "etype", "message", "messages", "refused"),
    [
        (401, "authentication_error", "invalid x-api-key", True, True),
        (401, "authentication_error", "OAuth token has expired", False, True),
        (403, "permission_error", "not allowed", True, True),
        (403, "permission_error", "not allowed", False, False),  # the model list may be closed to a good login
        (
            400,
            "invalid_request_error",
            "This credential is only authorized for use with Claude Code and cannot be used for other API requests.",
            True,
            True,
        ),
        (
            400,
            "invalid_request_error",
            "Third-party apps now draw from your extra usage, not your plan limits. Add more at "
            "claude.ai/settings/usage and keep going.",
            True,
            True,
        ),
        (400, "invalid_request_error", "You're out of extra usage. Add more at claude.ai/settings/usage.", True, True),
        (400, "invalid_request_error", "max_tokens: must be at least 1", True, False),
        (429, "rate_limit_error", "only authorized for use with Claude Code", True, False),  # never by words alone
        (402, "billing_error", "Your credit balance is too low", True, False),
    ],
)
def test_a_credential_refusal_is_told_from_a_request_error(
    status: int, etype: str, message: str, messages: bool, refused: bool
) -> None:
    assert credential_refusal(status, etype, message, messages=messages) is refused
    err = upstream_error(status, body(etype, message), None, messages=messages)
    assert err.credential_refused is refused and err.upstream_status == status
    if refused:
        assert (err.status, err.type, err.code) == (403, "upstream_credential_refused", "upstream_credential_refused")
        assert err.headers["x-should-retry"] == "false"
        assert "proxy's own upstream credential" in err.message and message in err.message
