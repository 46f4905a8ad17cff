"""The only I/O seam towards Anthropic: one shared httpx.AsyncClient, auth headers, retries, error mapping.

The client is created by the app's lifespan and handed in, so tests pass a transport or point the base URL at a
fake server. The proxy never refreshes OAuth tokens itself (that is `claude-proxy refresh`'s job); it re-reads the
credentials file when it changed, and once more after a 401 in case the file was rewritten since.

Retries cover 429, 529, 500/502/503/504 and connection failures, with jittered exponential backoff that honours
`retry-after`/`retry-after-ms` and `x-should-retry`, bounded in attempts and in total wait. They happen only before
anything was sent to the client: the streaming relay calls `open_stream` again only while it has sent nothing.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from claude_proxy.credentials import Credential, CredentialKind, CredentialResolver, CredentialsError
from claude_proxy.errors import (
    CredentialsUnavailable,
    ProxyError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error,
)
from claude_proxy.login import LoginState, refuses_login
from claude_proxy.transport import LeanTransport, Reply

log = logging.getLogger("claude_proxy.upstream")

ANTHROPIC_VERSION = "2023-06-01"
OAUTH_BETA = "oauth-2025-04-20"
_HEADER_SETS_KEPT = 32  # distinct anthropic-beta values whose headers are kept (clients send a handful)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})


def merge_betas(*groups: Sequence[str] | str | None) -> str:
    """Join anthropic-beta values (comma-separated strings or lists), dropping blanks and duplicates, keeping order."""
    seen: dict[str, None] = {}
    for group in groups:
        if not group:
            continue
        items = group.split(",") if isinstance(group, str) else group
        for item in items:
            item = item.strip()
            if item:
                seen[item] = None
    return ",".join(seen)


def build_headers(credential: Credential, client_betas: str | None = None) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    headers.update(credential.auth_headers())
    betas = merge_betas(OAUTH_BETA if credential.is_oauth else None, client_betas)
    if betas:
        headers["anthropic-beta"] = betas
    return headers


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The server's retry hint in seconds: `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    """Bounded, jittered exponential backoff. `max_retries=0` disables retrying."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_wait: float = 30.0
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, retry: int, hint: float | None, waited: float) -> float | None:
        """Seconds to sleep before retry number `retry` (1-based), or None when no retry should happen."""
        if retry > self.max_retries:
            return None
        if hint is not None:
            wait = hint
        else:
            wait = min(self.max_delay, self.base_delay * 2 ** (retry - 1)) * (0.5 + self.rng() / 2)
        if waited + wait > self.max_wait:
            return None
        return wait


@dataclass
class RetryBudget:
    """Retries spent and seconds waited so far for one client request."""

    retries: int = 0
    waited: float = 0.0


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    hint = headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in RETRYABLE_STATUS


def _parse_error_body(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _transport_error(exc: httpx.TransportError) -> ProxyError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout("Anthropic API did not answer in time", code="upstream_timeout")
    return UpstreamUnavailable(f"Anthropic API is unreachable ({type(exc).__name__})", code="upstream_unavailable")


def retries_spent(error: ProxyError) -> ProxyError:
    """Mark an error the proxy already retried: `x-should-retry: false` tells OpenAI and Anthropic SDK clients not to
    retry it again at once, so client retries do not multiply upstream attempts (no retry amplification)."""
    error.headers["x-should-retry"] = "false"
    return error


def _retryable_transport(exc: httpx.TransportError) -> bool:
    # A read timeout means the upstream is generating slowly or stalled: retrying would start the work again.
    return not isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout)


class UpstreamObserver(Protocol):
    """Receives one call per attempt and per retry (the metrics implement it); must be cheap and never raise."""

    def attempt(self, status: int | None, seconds: float, stream: bool) -> None: ...

    def retry(self, reason: str) -> None: ...


def retry_reason(status: int | None) -> str:
    """A bounded label for why a retry happened."""
    if status is None:
        return "connection"
    if status in (429, 529):
        return f"http_{status}"
    return "http_5xx" if status >= 500 else "http_other"


class Upstream:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        resolver: CredentialResolver,
        *,
        retry: RetryPolicy | None = None,
        stream_timeout: httpx.Timeout | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        observer: UpstreamObserver | None = None,
        transport: LeanTransport | None = None,
        login: LoginState | None = None,
    ) -> None:
        self.client = client
        self.login = login  # told whether Anthropic accepted the credential, on every answer
        self._login_kind = ""  # the kind of credential the last attempt used
        # When the client's lean transport is handed in too, messages go straight to it: the client's own layers
        # (cookie jar, redirects, event hooks) are per-request work the proxy has no use for, and a shared cookie
        # jar would even carry one caller's upstream cookies into another's requests. Whole answers are read
        # without httpx's request and response objects (`fetch`); streams keep httpx's response, which the relay
        # reads as it arrives.
        self.lean = transport
        self._default_headers = {name.lower(): value for name, value in client.headers.items()}
        self._timeouts = {
            False: client.timeout.as_dict(),
            True: (stream_timeout or client.timeout).as_dict(),
        }
        self.base_url = base_url.rstrip("/")
        self.messages_url = httpx.URL(f"{self.base_url}/v1/messages")  # parsed once, not per request
        self.resolver = resolver
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.retries = 0  # total retries performed
        self.observer = observer
        self._headers_credential: Credential | None = None
        self._headers_by_betas: dict[str | None, dict[str, str]] = {}

    def credential(self) -> Credential:
        try:
            return self.resolver.resolve()
        except CredentialsError as exc:
            raise CredentialsUnavailable(str(exc), code="credentials_unavailable") from None

    def _headers(self, credential: Credential, client_betas: str | None) -> dict[str, str]:
        """The request headers for a credential and a client's betas, built once per pair and shared (never
        modified): only for the current credential, so a replaced token is not kept."""
        if credential is not self._headers_credential:
            self._headers_by_betas.clear()
            self._headers_credential = credential
        headers = self._headers_by_betas.get(client_betas)
        if headers is None:
            headers = {**self._default_headers, **build_headers(credential, client_betas)}
            if len(self._headers_by_betas) >= _HEADER_SETS_KEPT:
                self._headers_by_betas.clear()
            self._headers_by_betas[client_betas] = headers
        return headers

    def _note_login(self, error: UpstreamError, kind: str, *, messages: bool) -> None:
        if self.login is not None and refuses_login(error.status, error.upstream_type, messages=messages):
            self.login.refused(kind, error.status, error.message)

    async def backoff(
        self, retry: int, hint: float | None, waited: float, why: str, reason: str = "other"
    ) -> float | None:
        """Sleep before a retry if the policy allows it; returns the seconds slept, or None to give up."""
        wait = self.retry.delay(retry, hint, waited)
        if wait is None:
            return None
        self.retries += 1
        if self.observer is not None:
            self.observer.retry(reason)
        log.info("upstream %s; retry %d/%d in %.2fs", why, retry, self.retry.max_retries, wait)
        await self.sleep(wait)
        return wait

    async def _send(self, body: bytes, client_betas: str | None, *, stream: bool) -> httpx.Response | Reply:
        """One POST /v1/messages, with the 401 re-read of a rewritten credentials file. Errors are not raised here."""
        credential = self.credential()
        for attempt in range(2):
            headers = self._headers(credential, client_betas)
            started = time.perf_counter()
            try:
                if self.lean is not None and not stream:
                    response: httpx.Response | Reply = await self.lean.fetch(
                        self.messages_url, headers, body, self._timeouts[False]
                    )
                else:
                    request = httpx.Request(
                        "POST",
                        self.messages_url,
                        content=body,
                        headers=headers,
                        extensions={"timeout": self._timeouts[stream]},
                    )
                    response = await self._dispatch(request, stream)
            except httpx.TransportError:
                if self.observer is not None:
                    self.observer.attempt(None, time.perf_counter() - started, stream)
                raise
            if self.observer is not None:
                self.observer.attempt(response.status_code, time.perf_counter() - started, stream)
            self._login_kind = credential.kind.value
            if response.status_code != 401 or credential.kind is not CredentialKind.OAUTH_FILE or attempt:
                return response
            self.resolver.invalidate()
            fresh = self.credential()
            if fresh.token == credential.token:
                return response
            await response.aclose()
            log.info("upstream answered 401; retrying once with the credentials file's newer token")
            credential = fresh
        raise AssertionError("unreachable")  # pragma: no cover

    async def _dispatch(self, request: httpx.Request, stream: bool) -> httpx.Response:
        if self.lean is None:
            return await self.client.send(request, stream=stream)
        response = await self.lean.handle_async_request(request)  # a stream: whole answers take `lean.fetch`
        response.request = request
        return response

    async def send_with_retries(
        self, body: bytes, client_betas: str | None, *, stream: bool, budget: RetryBudget | None = None
    ) -> httpx.Response | Reply:
        """POST /v1/messages until a non-retryable answer; returns a 2xx response (streaming responses open).

        `budget` carries the retries already spent on this client request (the streaming relay retries early stream
        failures from the same budget), so one request never makes more than 1 + max_retries attempts."""
        budget = budget if budget is not None else RetryBudget()
        while True:
            try:
                response = await self._send(body, client_betas, stream=stream)
            except httpx.TransportError as exc:
                error = _transport_error(exc)
                slept = (
                    await self.backoff(
                        budget.retries + 1, None, budget.waited, f"transport error {type(exc).__name__}", "connection"
                    )
                    if _retryable_transport(exc)
                    else None
                )
                if slept is None:
                    raise (retries_spent(error) if budget.retries else error) from None
                budget.waited += slept
                budget.retries += 1
                continue
            if response.status_code < 400:
                if self.login is not None:
                    self.login.accepted(self._login_kind)
                return response
            content = await response.aread()
            await response.aclose()
            error = upstream_error(response.status_code, _parse_error_body(content), response.headers)
            self._note_login(error, self._login_kind, messages=True)
            if should_retry(response.status_code, response.headers):
                hint = retry_after_seconds(response.headers)
                slept = await self.backoff(
                    budget.retries + 1,
                    hint,
                    budget.waited,
                    f"answered HTTP {response.status_code}",
                    retry_reason(response.status_code),
                )
                if slept is not None:
                    budget.waited += slept
                    budget.retries += 1
                    continue
                if budget.retries:
                    raise retries_spent(error)
            raise error

    async def create_message(
        self, body: Mapping[str, Any], client_betas: str | None = None
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        """POST /v1/messages (non-streaming); returns the parsed message and the response headers."""
        response = await self.send_with_retries(orjson.dumps(body), client_betas, stream=False)
        try:
            message = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                "Anthropic API returned a response that is not JSON", status=502, type="upstream_error"
            ) from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamError("Anthropic API returned an unexpected response", status=502, type="upstream_error")
        return message, response.headers

    async def open_stream(
        self, body: bytes, client_betas: str | None = None, budget: RetryBudget | None = None
    ) -> httpx.Response:
        """POST /v1/messages with stream: true; the caller reads the open response and must close it."""
        response = await self.send_with_retries(body, client_betas, stream=True, budget=budget)
        assert isinstance(response, httpx.Response)  # streams never take the whole-answer path
        return response

    async def list_models(self) -> list[dict[str, Any]]:
        """GET /v1/models, all pages (bounded)."""
        credential = self.credential()
        models: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        for _ in range(10):
            try:
                response = await self.client.get(
                    f"{self.base_url}/v1/models", params=params, headers=build_headers(credential)
                )
            except httpx.TransportError as exc:
                raise _transport_error(exc) from None
            if response.status_code >= 400:
                error = upstream_error(response.status_code, _parse_error_body(response.content), response.headers)
                self._note_login(error, credential.kind.value, messages=False)
                raise error
            if self.login is not None:
                self.login.accepted(credential.kind.value)
            page = orjson.loads(response.content)
            models.extend(m for m in page.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str))
            if not page.get("has_more") or not page.get("last_id"):
                break
            params = {"limit": "1000", "after_id": str(page["last_id"])}
        return models
