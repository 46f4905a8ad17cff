"""The grant's pieces that need no server: retry-after parsing, backoff bounds, error text masking."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from claude_proxy.oauth import (
    InvalidGrant,
    NetworkError,
    RetryPolicy,
    grant_once,
    parse_retry_after,
    refresh_grant,
)


@pytest.mark.parametrize(("value", "expected"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None)])
def test_retry_after_seconds(value: str, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_cap=5)
    for retry, upper in [(1, 1), (2, 2), (3, 4), (4, 5), (10, 5)]:
        delay = policy.backoff(retry)
        assert upper / 2 <= delay <= upper


def test_error_bodies_never_reach_the_message_with_a_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "error": "invalid_grant",
            "error_description": "token sk-ant-ort01-test-leak is revoked, also abcdefghijklmnopqrstuvwxyz0123456789",
        }
        return httpx.Response(400, json=body)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(InvalidGrant) as err:
        grant_once(client, "https://auth.invalid/token", "client", "sk-ant-ort01-test-mine")
    text = str(err.value)
    assert "invalid_grant" in text and "revoked" in text
    assert "sk-ant" not in text and "abcdefghijklmnop" not in text


def test_network_retries_are_bounded_by_attempts() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(NetworkError) as err:
        refresh_grant(client, "https://auth.invalid/token", "c", "r", RetryPolicy(attempts=4), sleeps.append)
    assert len(calls) == 4 and len(sleeps) == 3
    assert "gave up after 4 attempts" in str(err.value)


def test_network_retries_are_bounded_by_the_wait_budget() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    policy = RetryPolicy(attempts=100, max_wait=10, backoff_base=1, backoff_cap=4)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(NetworkError):
        refresh_grant(client, "https://auth.invalid/token", "c", "r", policy, sleeps.append)
    assert sum(sleeps) <= 10 and len(sleeps) >= 2
