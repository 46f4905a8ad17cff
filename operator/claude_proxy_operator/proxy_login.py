"""What the proxy last heard from Anthropic about its credential: the `login` object of its GET /readyz.

Each reconcile pass reads it through the proxy's Service, and so does the login watch between passes, so a refused
login shows in `LoginValid` within one watch interval. Only the known fields are kept, checked and shortened (status
and Events are readable by anyone who may read the resource); the proxy never puts the credential there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

STATES = frozenset({"valid", "refused", "unknown"})
CREDENTIALS = frozenset({"api_key", "access_token", "oauth_file"})
MAX_SINCE = 64


def url_for(template: str, name: str, namespace: str, domain: str, port: int) -> str:
    return template.format(name=name, namespace=namespace, domain=domain, port=port)


def parse(body: Any) -> dict[str, Any] | None:
    """The checked `login` object of a /readyz answer, or None when it has none worth trusting."""
    login = body.get("login") if isinstance(body, Mapping) else None
    if not isinstance(login, Mapping) or login.get("state") not in STATES:
        return None
    found: dict[str, Any] = {"state": login["state"]}
    if login.get("credential") in CREDENTIALS:
        found["credential"] = login["credential"]
    if isinstance(login.get("status"), int) and not isinstance(login.get("status"), bool):
        found["status"] = login["status"]
    if isinstance(login.get("message"), str):
        found["message"] = login["message"]
    if isinstance(login.get("since"), str) and len(login["since"]) <= MAX_SINCE:
        found["since"] = login["since"]  # when the verdict last changed: names one refusal
    return found


async def probe(url: str, timeout: float) -> dict[str, Any] | None:
    """The proxy's login verdict, or None when the proxy cannot be reached or gives none."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            response = await client.get(url)
        return parse(response.json())
    except (httpx.HTTPError, ValueError):
        return None
