"""When to try a request again, and how long to wait first: one policy for the Messages API and the OAuth grant.

- Which answers are retried: `RETRYABLE_STATUS` (429, 529 and 500/502/503/504) from the Messages API, unless the
  server's `x-should-retry` says otherwise (`should_retry`), and `GRANT_RETRYABLE_STATUS` from the token endpoint;
  which transport failures are is the caller's call, since only it knows whether one may have started work upstream.
- How long to wait: the server's hint when it gives one (`retry_after`: `retry-after-ms`, then `retry-after` in
  seconds or as an HTTP date), else exponential backoff with jitter (`RetryPolicy.backoff`).
- How much in all: `RetryPolicy.max_retries` retries and `max_wait` seconds of waiting per request, tracked in a
  `RetryBudget` that every retry of one request draws on (towards Anthropic, all in one loop,
  `Upstream.send_with_retries`: HTTP errors, connection failures and streams failing before their first output).

The policy only computes; callers sleep through a function they are given, so tests never wait on real backoff.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})  # the Messages API's
GRANT_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})  # the OAuth token endpoint's (and any 5xx)


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The server's retry hint in seconds: `retry-after-ms`, then `retry-after` (delta-seconds or an HTTP date,
    counted from `now`). None when neither is there or readable."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        ms = _seconds(raw_ms.strip())
        if ms is not None:
            return ms / 1000
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    seconds = _seconds(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an error answer is worth another try: the server's `x-should-retry` when it says, else its status."""
    hint = headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in RETRYABLE_STATUS


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff. `max_retries=0` disables retrying."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_wait: float = 30.0  # seconds of waiting in all, backoff and server hints together
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based) without a server hint: `base_delay * 2**(retry-1)`, capped
        at `max_delay`, with jitter in [50%, 100%] so clients that failed together do not return together."""
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * (0.5 + self.rng() / 2)

    def delay(self, retry: int, hint: float | None, waited: float) -> float | None:
        """Seconds to wait before retry number `retry` (1-based), having waited `waited` already; None when no retry
        should happen (the retries or the wait budget are spent)."""
        if retry > self.max_retries:
            return None
        wait = hint if hint is not None else self.backoff(retry)
        if waited + wait > self.max_wait:
            return None
        return wait


@dataclass
class RetryBudget:
    """Retries spent and seconds waited so far for one request."""

    retries: int = 0
    waited: float = 0.0

    def spend(self, waited: float) -> None:
        self.retries += 1
        self.waited += waited
