"""The grant's pieces that need no server: retry bounds and error text masking."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from claude_proxy.credentials.oauth import (
    REFRESH_RETRY,
    InvalidGrant,
    NetworkError,
    grant_once,
    refresh_grant,
)


def test_backoff_grows_and_is_capped() -> None:
    policy = replace(REFRESH_RETRY, base_delay=1, max_delay=5)
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
        refresh_grant(
            client, "https://auth.invalid/token", "c", "r", replace(REFRESH_RETRY, max_retries=3), sleeps.append
        )
    assert len(calls) == 4 and len(sleeps) == 3
    assert "gave up after 4 attempts" in str(err.value)


def test_network_retries_are_bounded_by_the_wait_budget() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    policy = replace(REFRESH_RETRY, max_retries=99, max_wait=10, base_delay=1, max_delay=4)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(NetworkError):
        refresh_grant(client, "https://auth.invalid/token", "c", "r", policy, sleeps.append)
    assert sum(sleeps) <= 10 and len(sleeps) >= 2
