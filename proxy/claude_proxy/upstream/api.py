"""The only I/O seam towards Anthropic: the shared HTTP client (`client.py`), auth headers, retries, error mapping.

The client is created by the app's lifespan and handed in; tests point the base URL at a fake server. The proxy
never refreshes OAuth tokens itself (that is `claude-proxy refresh`'s job); it re-reads the credentials file when it
changed, and once more after a 401 in case the file was rewritten since.

Retries follow `retry.py`: 429, 529, 500/502/503/504 and connection failures, with jittered exponential backoff that
honours `retry-after`/`retry-after-ms` and `x-should-retry`, bounded in attempts and in total wait; a refusal of the
credential (`convert.errors.credential_refusal`) is never retried. They happen only
before anything was sent to the client, in one loop (`send_with_retries`) that also retries a stream failing before its
first output (the streaming relay's `opened` hook raises `Retry`), all from one budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import anyio
import orjson
from yarl import URL

from claude_proxy.convert.errors import upstream_error
from claude_proxy.credentials.resolver import Credential, CredentialKind, CredentialResolver, CredentialsError
from claude_proxy.errors import (
    CredentialsUnavailable,
    ProxyError,
    UnusableAnswer,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from claude_proxy.redact import display_url, mask_secrets
from claude_proxy.retry import RetryBudget, RetryPolicy, retry_after, should_retry
from claude_proxy.upstream.client import Client, Response, TransportError
from claude_proxy.upstream.login import LoginState

log = logging.getLogger("claude_proxy.upstream")

ANTHROPIC_VERSION = "2023-06-01"
OAUTH_BETA = "oauth-2025-04-20"
_HEADER_SETS_KEPT = 32  # distinct anthropic-beta values whose headers are kept (clients send a handful)


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


def _parse_error_body(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _transport_error(exc: TransportError, base_url: str) -> ProxyError:
    where = display_url(base_url)
    if exc.timeout:
        return UpstreamTimeout(f"Anthropic API at {where} did not answer in time", code="upstream_timeout")
    return UpstreamUnavailable(
        f"Anthropic API at {where} is unreachable ({type(exc).__name__}); check ANTHROPIC_BASE_URL and the network",
        code="upstream_unavailable",
    )


def retries_spent(error: ProxyError) -> ProxyError:
    """Mark an error the proxy already retried: `x-should-retry: false` tells OpenAI and Anthropic SDK clients not to
    retry it again at once, so client retries do not multiply upstream attempts (no retry amplification)."""
    error.headers["x-should-retry"] = "false"
    return error


def _retryable_transport(exc: TransportError) -> bool:
    # A read timeout means the upstream is generating slowly or stalled: retrying would start the work again.
    return exc.retry_safe


class Retry(Exception):
    """An attempt's failure that another attempt may not meet, raised inside `Upstream.send_with_retries` (by an
    attempt, or by the `opened` hook of a stream). When no retry is left the client gets `error`, or `answer` when
    there is one: Anthropic's own answer, relayed as it is."""

    def __init__(
        self,
        error: ProxyError,
        why: str,
        reason: str,
        hint: float | None = None,
        answer: Response | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(why)
        self.error = error
        self.status = status  # the HTTP status of the answer retried, None for a broken connection or stream
        self.why = why  # for the log line
        self.reason = reason  # the retry metric's label (`retry_reason`, or "connection", "stream_error")
        self.hint = hint  # the server's retry-after, in seconds
        self.answer = answer


async def _close(response: Response) -> None:
    with anyio.CancelScope(shield=True):  # the request's own cancellation must not leave the connection open
        await response.close()


class UpstreamObserver(Protocol):
    """Receives one call per attempt and per retry (the metrics implement it); must be cheap and never raise."""

    def attempt(self, status: int | None, seconds: float, stream: bool) -> None: ...

    def retry(self, reason: str) -> None: ...

    def ratelimits(self, headers: Mapping[str, str]) -> None: ...


class AttemptSpan(Protocol):
    """One attempt's trace span, ended once with the attempt's HTTP status and error type (None when it had none)."""

    def end(self, status: int | None, error: str | None) -> None: ...


class AttemptTracer(Protocol):
    """Opens a span for each attempt of `send_with_retries` (the app's OpenTelemetry traces implement it; None when
    they are off); `resend_count` is the number of attempts before this one. Must be cheap and never raise."""

    def attempt(self, resend_count: int, stream: bool) -> AttemptSpan | None: ...


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
        client: Client,
        resolver: CredentialResolver,
        *,
        timeouts: tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        observer: UpstreamObserver | None = None,
        login: LoginState | None = None,
        tracer: AttemptTracer | None = None,
    ) -> None:
        self.client = client
        self.tracer = tracer
        self.login = login  # told whether Anthropic accepted the credential, on every answer
        self._login_kind = ""  # the kind of credential the last attempt used
        default = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=600.0)
        # (whole answers, streams): a stream's read timeout is its idle timeout
        self._timeouts = {False: (timeouts or (default, default))[0], True: (timeouts or (default, default))[1]}
        self.base_url = str(client.base)
        self.messages_url = client.url("/v1/messages")  # parsed once, not per request
        self.count_tokens_url = client.url("/v1/messages/count_tokens")
        self.models_url = client.url("/v1/models")
        self.resolver = resolver
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.retries = 0  # total retries performed
        self.observer = observer
        self._headers_credential: Credential | None = None
        self._headers_by_betas: dict[str | None, dict[str, str]] = {}

    async def credential(self) -> Credential:
        try:
            return await self.resolver.resolve_async()  # a look at the file runs in a worker thread
        except CredentialsError as exc:
            raise CredentialsUnavailable(str(exc), code="credentials_unavailable") from None

    def _headers(self, credential: Credential, client_betas: str | None) -> dict[str, str]:
        """The request headers for a credential and a client's betas, built once per pair and shared
        (never modified): only for the current credential, so a replaced token is not kept."""
        if credential is not self._headers_credential:
            self._headers_by_betas.clear()
            self._headers_credential = credential
        headers = self._headers_by_betas.get(client_betas)
        if headers is None:
            headers = build_headers(credential, client_betas)
            if len(self._headers_by_betas) >= _HEADER_SETS_KEPT:
                self._headers_by_betas.clear()
            self._headers_by_betas[client_betas] = headers
        return headers

    def _note_login(self, error: UpstreamError, kind: str) -> None:
        """A refusal of the credential marks the login refused; its message, shown to every client from now on,
        loses anything shaped like a token."""
        if error.credential_refused:
            error.message = mask_secrets(error.message)
            if self.login is not None:
                self.login.refused(kind, error.upstream_status, error.upstream_message)

    async def _send(
        self,
        body: bytes,
        client_betas: str | None,
        *,
        stream: bool,
        url: URL | None = None,
        version: str | None = None,
    ) -> Response:
        """One POST to `url` (/v1/messages by default), with the 401 re-read of a rewritten credentials file; a
        client's `version` replaces the default anthropic-version. Errors are not raised here."""
        credential = await self.credential()
        url = url or self.messages_url
        for attempt in range(2):
            headers = self._headers(credential, client_betas)
            if version and version != ANTHROPIC_VERSION:
                headers = {**headers, "anthropic-version": version}
            started = time.perf_counter()
            try:
                if stream:
                    response = await self.client.open(url, headers, body, self._timeouts[True])
                else:
                    response = await self.client.fetch("POST", url, headers, body, self._timeouts[False])
            except TransportError:
                if self.observer is not None:
                    self.observer.attempt(None, time.perf_counter() - started, stream)
                raise
            if self.observer is not None:
                self.observer.attempt(response.status_code, time.perf_counter() - started, stream)
                self.observer.ratelimits(response.headers)
            self._login_kind = credential.kind.value
            if response.status_code != 401 or credential.kind is not CredentialKind.OAUTH_FILE or attempt:
                return response
            self.resolver.invalidate()
            fresh = await self.credential()
            if fresh.token == credential.token:
                return response
            await response.close()
            log.info("upstream answered 401; retrying once with the credentials file's newer token")
            credential = fresh
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_with_retries(
        self,
        body: bytes,
        client_betas: str | None,
        *,
        stream: bool,
        budget: RetryBudget | None = None,
        url: URL | None = None,
        version: str | None = None,
        relay_errors: bool = False,
        opened: Callable[[Response], Awaitable[None]] | None = None,
    ) -> Response:
        """POST /v1/messages (or `url`) until a non-retryable answer; returns a 2xx response (a stream still open).
        With `relay_errors`, the final error answer is returned too, its body read and the response closed, instead
        of raised (but for a refusal of the credential, which is raised).

        The one retry loop before the first byte: `opened`, given for a stream, reads an opened 2xx answer up to its
        first output before it counts as the answer, and raises `Retry` for an early failure worth another attempt;
        that attempt is charged to the same `budget` as the HTTP and connection failures, so one client request
        never makes more than 1 + max_retries attempts. The response is closed whenever it is not returned."""
        budget = budget if budget is not None else RetryBudget()
        while True:
            response: Response | None = None
            span = self.tracer.attempt(budget.retries, stream) if self.tracer is not None else None
            try:
                response = await self._attempt(body, client_betas, stream, url, version, relay_errors, budget)
                if opened is not None and response.status_code < 400:
                    await opened(response)
                if span is not None:
                    code = response.status_code
                    span.end(code, str(code) if code >= 400 else None)
                return response
            except Retry as retry:
                if span is not None:
                    span.end(retry.status, str(retry.status) if retry.status is not None else retry.reason)
                wait = self.retry.delay(budget.retries + 1, retry.hint, budget.waited)
                if wait is None and retry.answer is not None:
                    return retry.answer
                if response is not None:
                    await _close(response)
                if wait is None:
                    error = retry.error
                    break  # raised below, outside this clause: as its context, `retry` (which holds it) would cycle
                self.retries += 1
                if self.observer is not None:
                    self.observer.retry(retry.reason)
                log.info(
                    "upstream %s; retry %d/%d in %.2fs", retry.why, budget.retries + 1, self.retry.max_retries, wait
                )
                await self.sleep(wait)
                budget.spend(wait)
            except BaseException as exc:
                if span is not None:
                    status = exc.status if isinstance(exc, UpstreamError) else None
                    span.end(status, str(status) if status is not None else type(exc).__name__)
                if response is not None:
                    await _close(response)
                raise
        raise retries_spent(error) if budget.retries else error

    async def _attempt(
        self,
        body: bytes,
        client_betas: str | None,
        stream: bool,
        url: URL | None,
        version: str | None,
        relay_errors: bool,
        budget: RetryBudget,
    ) -> Response:
        """One attempt of `send_with_retries`: a 2xx answer, the final error answer with `relay_errors`, else the
        error raised (as `Retry` when another attempt may succeed)."""
        try:
            response = await self._send(body, client_betas, stream=stream, url=url, version=version)
        except TransportError as exc:
            error = _transport_error(exc, self.base_url)
            if _retryable_transport(exc):
                raise Retry(error, f"transport error {type(exc).__name__}", "connection") from None
            raise (retries_spent(error) if budget.retries else error) from None
        if response.status_code < 400:
            if self.login is not None:
                self.login.accepted(self._login_kind)
            return response
        try:
            content = await response.read()
        except TransportError as exc:
            raise _transport_error(exc, self.base_url) from None
        finally:
            await response.close()
        error = upstream_error(response.status_code, _parse_error_body(content), response.headers)
        self._note_login(error, self._login_kind)
        # A refused credential is refused again at once, whatever the answer's retry hint says.
        if not error.credential_refused and should_retry(response.status_code, response.headers):
            raise Retry(
                error,
                f"answered HTTP {response.status_code}",
                retry_reason(response.status_code),
                retry_after(response.headers),
                response if relay_errors else None,
                response.status_code,
            )
        if relay_errors and not error.credential_refused:  # a refusal is said the proxy's way on every route
            return response
        raise error

    async def create_message(
        self, body: Mapping[str, Any], client_betas: str | None = None
    ) -> tuple[dict[str, Any], Mapping[str, str]]:
        """POST /v1/messages (non-streaming); returns the parsed message and the response headers."""
        response = await self.send_with_retries(orjson.dumps(body), client_betas, stream=False)
        try:
            message = orjson.loads(response.content or b"")
        except orjson.JSONDecodeError:
            raise UnusableAnswer("Anthropic API returned a response that is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UnusableAnswer("Anthropic API returned an unexpected response")
        return message, response.headers

    async def list_models(self) -> list[dict[str, Any]]:
        """GET /v1/models, all pages (bounded)."""
        credential = await self.credential()
        headers = build_headers(credential)
        models: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        for _ in range(10):
            try:
                response = await self.client.fetch(
                    "GET", self.models_url, headers, None, self._timeouts[False], params=params
                )
            except TransportError as exc:
                raise _transport_error(exc, self.base_url) from None
            content = response.content or b""
            if response.status_code >= 400:
                error = upstream_error(
                    response.status_code, _parse_error_body(content), response.headers, messages=False
                )
                self._note_login(error, credential.kind.value)
                raise error
            if self.login is not None:
                self.login.accepted(credential.kind.value)
            page = orjson.loads(content)
            models.extend(m for m in page.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str))
            if not page.get("has_more") or not page.get("last_id"):
                break
            params = {"limit": "1000", "after_id": str(page["last_id"])}
        return models
