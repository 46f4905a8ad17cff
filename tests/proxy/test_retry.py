"""The retry policy on its own: server hints, backoff bounds and jitter, the per-request budget, what is retried."""

from __future__ import annotations

import email.utils

import pytest

from claude_proxy.retry import RETRYABLE_STATUS, RetryBudget, RetryPolicy, retry_after, should_retry


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0.5", 0.5), (" 2 ", 2.0), ("-3", 0.0), ("soon", None), ("", None), ("nan", None), ("inf", None)],
)
def test_retry_after_in_seconds(value: str, expected: float | None) -> None:
    assert retry_after({"retry-after": value}) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert retry_after({"retry-after": email.utils.formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30)
    assert retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


def test_retry_after_ms_comes_first_and_a_bad_one_falls_back() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after({"retry-after-ms": "-5"}) == 0.0
    assert retry_after({}) is None and retry_after(None) is None


def test_backoff_doubles_is_capped_and_jittered_within_half_to_whole() -> None:
    low = RetryPolicy(base_delay=1, max_delay=5, rng=lambda: 0.0)
    high = RetryPolicy(base_delay=1, max_delay=5, rng=lambda: 0.999999)
    for retry, upper in [(1, 1), (2, 2), (3, 4), (4, 5), (10, 5)]:
        assert low.backoff(retry) == pytest.approx(upper / 2)
        assert high.backoff(retry) == pytest.approx(upper, rel=1e-5)


def test_delay_honours_the_hint_the_retry_count_and_the_wait_budget() -> None:
    policy = RetryPolicy(max_retries=2, base_delay=1, max_delay=8, max_wait=10, rng=lambda: 1.0)
    assert policy.delay(1, None, 0.0) == 1.0
    assert policy.delay(2, 3.5, 0.0) == 3.5  # the server's hint wins over backoff
    assert policy.delay(3, None, 0.0) is None  # beyond max_retries
    assert policy.delay(1, 6.0, 5.0) is None  # 5 s waited + 6 s more > 10 s budget
    assert policy.delay(1, 5.0, 5.0) == 5.0
    assert RetryPolicy(max_retries=0).delay(1, None, 0.0) is None


def test_the_budget_counts_retries_and_waiting() -> None:
    budget = RetryBudget()
    budget.spend(0.5)
    budget.spend(1.5)
    assert (budget.retries, budget.waited) == (2, 2.0)


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUS))
def test_retryable_statuses(status: int) -> None:
    assert should_retry(status, {})
    assert not should_retry(status, {"x-should-retry": "false"})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_not_retried_unless_the_server_says_so(status: int) -> None:
    assert not should_retry(status, {})
    assert should_retry(status, {"x-should-retry": "true"})
