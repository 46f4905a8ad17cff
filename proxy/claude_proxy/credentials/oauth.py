"""The OAuth `refresh_token` grant against Anthropic's token endpoint, with bounded retries.

One attempt is `grant_once`; `refresh_grant` adds the retry policy (network errors and 5xx: backoff; 429: honour
`retry-after`; `invalid_grant` and other refusals: no retry). Every failure is an `OAuthError` whose `reason` is a
snake_case code and whose message never contains a token: error bodies are reduced to their `error` and
`error_description` fields, and anything shaped like a token is masked even there.

The request identifies this project honestly (`User-Agent: claude-code-proxy/<version>`); it does not pretend to
be Claude Code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from claude_proxy import __version__
from claude_proxy.redact import mask_secrets
from claude_proxy.retry import GRANT_RETRYABLE_STATUS, RetryBudget, RetryPolicy, retry_after

DEFAULT_TOKEN_URL = "https://platform.claude.com/v1/oauth/token"
DEFAULT_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
USER_AGENT = f"claude-code-proxy/{__version__}"


log = logging.getLogger(__name__)


def _mask(text: str, limit: int = 200) -> str:
    return mask_secrets(text)[:limit]


class OAuthError(Exception):
    """The grant failed; `reason` is the outcome code, the message is safe to print."""

    reason = "rejected"


class InvalidGrant(OAuthError):
    reason = "invalid_grant"


class RateLimited(OAuthError):
    reason = "rate_limited"

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(OAuthError):
    reason = "server_error"


class NetworkError(OAuthError):
    reason = "network"


class BadResponse(OAuthError):
    reason = "bad_response"


class Rejected(OAuthError):
    reason = "rejected"


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)  # None: the endpoint did not rotate it; keep the stored one
    expires_in: float | None  # seconds; None when the endpoint did not say


# Four tries (three retries), backoff from 1 s up to 30 s, at most two minutes of waiting in all.
REFRESH_RETRY = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=30.0, max_wait=120.0)


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """(`error` code, safe short description) of an OAuth error body; the body itself is never echoed."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    error = body.get("error")
    description = body.get("error_description")
    if isinstance(error, dict):  # Anthropic's own envelope: {"type": "error", "error": {"type", "message"}}
        description = error.get("message")
        error = error.get("type")
    code = _mask(error, 64) if isinstance(error, str) else None
    text = _mask(description) if isinstance(description, str) else ""
    return code, text


def _parse_success(response: httpx.Response) -> TokenResponse:
    try:
        body: Any = response.json()
    except ValueError:
        raise BadResponse(f"token endpoint answered {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise BadResponse("token endpoint answered with JSON that is not an object")
    access = body.get("access_token")
    if not isinstance(access, str) or not access.strip():
        raise BadResponse("token endpoint response has no access_token")
    refresh = body.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh.strip()):
        refresh = None
    expires_in = body.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**9:
        expires_in = None
    return TokenResponse(access.strip(), refresh.strip() if refresh else None, expires_in)


def grant_once(client: httpx.Client, token_url: str, client_id: str, refresh_token: str) -> TokenResponse:
    """One POST of the refresh_token grant. Raises an OAuthError subclass on any failure."""
    payload = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    try:
        response = client.post(token_url, json=payload, headers=headers)
    except httpx.TimeoutException as exc:
        raise NetworkError(f"token endpoint timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise NetworkError(f"cannot reach the token endpoint ({type(exc).__name__})") from None
    status = response.status_code
    log.debug("token endpoint answered %s", status)
    if status == 200:
        return _parse_success(response)
    code, description = _error_fields(response)
    detail = f"{code}: {description}" if code and description else (code or description or "no detail")
    if code == "invalid_grant":
        raise InvalidGrant(f"token endpoint refused the refresh token ({detail})")
    if status == 429:
        raise RateLimited(f"token endpoint is rate limiting ({status}, {detail})", retry_after(response.headers))
    if status in GRANT_RETRYABLE_STATUS or status >= 500:
        raise ServerError(f"token endpoint failed ({status}, {detail})")
    raise Rejected(f"token endpoint refused the request ({status}, {detail})")


def refresh_grant(
    client: httpx.Client,
    token_url: str,
    client_id: str,
    refresh_token: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenResponse:
    """The grant with the retry policy. The last error is raised when tries or the wait budget run out.

    A retry after a network error reuses the same refresh token: if the lost attempt had reached the endpoint,
    the token is already spent and the retry gets `invalid_grant`; its message then says so.
    """
    policy = policy or REFRESH_RETRY
    budget = RetryBudget()
    uncertain = False  # an earlier attempt may have reached the endpoint without us seeing the answer
    while True:
        attempt = budget.retries + 1
        try:
            log.debug("refresh grant attempt %d of %d", attempt, policy.max_retries + 1)
            return grant_once(client, token_url, client_id, refresh_token)
        except InvalidGrant as exc:
            if uncertain:
                raise InvalidGrant(
                    f"{exc} after an earlier attempt got no answer; that attempt may have used the token"
                ) from None
            raise
        except (NetworkError, ServerError, RateLimited) as exc:
            if isinstance(exc, NetworkError | ServerError):
                uncertain = True
            if attempt > policy.max_retries:
                raise _extended(exc, f"; gave up after {attempt} attempts") from None
            hint = exc.retry_after if isinstance(exc, RateLimited) else None
            delay = hint if hint is not None else policy.backoff(attempt)
            if policy.delay(attempt, delay, budget.waited) is None:
                budget_note = f"; next try would be in {delay:.0f}s, beyond the {policy.max_wait:.0f}s wait budget"
                raise _extended(exc, budget_note) from None
            log.info("%s; retrying in %.1fs", exc, delay)
            sleep(delay)
            budget.spend(delay)


def _extended(exc: OAuthError, suffix: str) -> OAuthError:
    if isinstance(exc, RateLimited):
        return RateLimited(f"{exc}{suffix}", exc.retry_after)
    return type(exc)(f"{exc}{suffix}")
