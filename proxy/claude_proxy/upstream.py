"""The only I/O seam towards Anthropic: one shared httpx.AsyncClient, auth headers, error mapping.

The client is created by the app's lifespan and handed in, so tests pass a transport or point the base URL at a
fake server. The proxy never refreshes OAuth tokens itself (that is `claude-proxy refresh`'s job); it re-reads the
credentials file when it changed, and once more after a 401 in case the file was rewritten since.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from claude_proxy.credentials import Credential, CredentialResolver, CredentialsError
from claude_proxy.errors import (
    CredentialsUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error,
)

log = logging.getLogger("claude_proxy.upstream")

ANTHROPIC_VERSION = "2023-06-01"
OAUTH_BETA = "oauth-2025-04-20"


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


def _parse_error_body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


class Upstream:
    def __init__(self, client: httpx.AsyncClient, base_url: str, resolver: CredentialResolver) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.resolver = resolver

    def credential(self) -> Credential:
        try:
            return self.resolver.resolve()
        except CredentialsError as exc:
            raise CredentialsUnavailable(str(exc), code="credentials_unavailable") from None

    async def _post(self, path: str, body: bytes, credential: Credential, client_betas: str | None) -> httpx.Response:
        try:
            return await self.client.post(
                f"{self.base_url}{path}", content=body, headers=build_headers(credential, client_betas)
            )
        except httpx.TimeoutException:
            raise UpstreamTimeout("Anthropic API did not answer in time", code="upstream_timeout") from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"Anthropic API is unreachable ({type(exc).__name__})", code="upstream_unavailable"
            ) from None

    async def create_message(
        self, body: Mapping[str, Any], client_betas: str | None = None
    ) -> tuple[dict[str, Any], httpx.Headers]:
        """POST /v1/messages (non-streaming); returns the parsed message and the response headers."""
        payload = orjson.dumps(body)
        credential = self.credential()
        response = await self._post("/v1/messages", payload, credential, client_betas)
        if response.status_code == 401 and credential.kind.value == "oauth_file":
            self.resolver.invalidate()
            fresh = self.credential()
            if fresh.token != credential.token:
                log.info("upstream answered 401; retrying once with the credentials file's newer token")
                response = await self._post("/v1/messages", payload, fresh, client_betas)
        if response.status_code >= 400:
            raise upstream_error(response.status_code, _parse_error_body(response), response.headers)
        try:
            message = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                "Anthropic API returned a response that is not JSON", status=502, type="upstream_error"
            ) from None
        if not isinstance(message, dict):
            raise UpstreamError("Anthropic API returned an unexpected response", status=502, type="upstream_error")
        return message, response.headers

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
            except httpx.TimeoutException:
                raise UpstreamTimeout("Anthropic API did not answer in time") from None
            except httpx.TransportError as exc:
                raise UpstreamUnavailable(f"Anthropic API is unreachable ({type(exc).__name__})") from None
            if response.status_code >= 400:
                raise upstream_error(response.status_code, _parse_error_body(response), response.headers)
            page = orjson.loads(response.content)
            models.extend(m for m in page.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str))
            if not page.get("has_more") or not page.get("last_id"):
                break
            params = {"limit": "1000", "after_id": str(page["last_id"])}
        return models
