"""A login Anthropic refuses before its token expires is healed when a refresh can heal it: the operator runs the
refresh once, backs off after a failure, stops at `invalid_grant` and says who must do what (in-process API server,
the proxy's /readyz served by the `readyz` fixture, as in test_reconcile_login.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, JOBS, SECRETS
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.conftest import Readyz
from tests.operator.reconcile_support import (
    EVENTS,
    NS,
    exists,
    finish_job,
    outcome_line,
    posted_event,
    proxy_body,
    serving_oauth,
    status_is,
)

REFUSED = {
    "state": "refused",
    "credential": "oauth_file",
    "status": 401,
    "message": "OAuth token has been revoked",
    "since": "2030-01-01T01:00:00Z",
}


async def _heal_jobs(api: Api, count: int) -> list[str]:
    async def found() -> list[str] | None:
        names = sorted(
            j["metadata"]["name"] for j in await api.list(JOBS, NS) if "-refresh-now-" in j["metadata"]["name"]
        )
        return names if len(names) >= count else None

    return await eventually(found, what=f"{count} refresh Job(s) for the refused login")


async def _heal_record(api: Api) -> dict[str, Any]:
    return ((await api.get(CLAUDE_PROXIES, NS, "p") or {}).get("status") or {}).get("heal") or {}


async def test_a_refused_token_is_refreshed_once_with_backoff_until_invalid_grant(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await serving_oauth(api, readyz)
    assert await _heal_jobs_now(api) == []

    # Revoked upstream while the token is not yet expired: one refresh, at once.
    readyz.logins[NS, "p"] = dict(REFUSED)
    [first] = await _heal_jobs(api, 1)
    started = await posted_event(api, "Normal", "RefreshStarted")
    assert first in started["message"] and "attempt 1" in started["message"]
    await asyncio.sleep(1.5)
    assert await _heal_jobs_now(api) == [first]  # not again while it runs

    # It fails for a passing reason: the next attempt waits for the backoff, then runs.
    await finish_job(api, first, "p", "refresh", outcome_line("refresh", "failed", "network"))
    second = [name for name in await _heal_jobs(api, 2) if name != first]
    assert len(second) == 1

    async def recorded() -> dict[str, Any] | None:
        record = await _heal_record(api)
        return record if record.get("attempts") == 2 else None

    record = await eventually(recorded, what="the second attempt in status.heal")
    assert record["job"] == second[0] and record["since"] == REFUSED["since"]

    # The refresh token is dead too: no more attempts; the user is told to log in again and where to put it.
    await finish_job(api, second[0], "p", "refresh", outcome_line("refresh", "failed", "invalid_grant"))
    dead = await status_is(api, "p", "TokenFresh", ("False", "InvalidGrant"))
    fresh = next(c for c in dead["status"]["conditions"] if c["type"] == "TokenFresh")
    assert "log in again" in fresh["message"] and "Secret creds" in fresh["message"]

    async def told() -> list[str] | None:
        said = [e["message"] for e in await api.list(EVENTS, NS) if e["reason"] == "RefreshFailed"]
        return [m for m in said if m.startswith("invalid_grant")] or None

    [warning] = await eventually(told, what="the RefreshFailed Event for invalid_grant")
    assert "log in again" in warning and "Secret creds" in warning
    await asyncio.sleep(3.0)  # longer than every backoff of the tests' operator
    assert len(await _heal_jobs_now(api)) == 2
    assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "RefreshStarted"]) == 2


async def test_a_successful_refresh_is_not_repeated_for_the_same_refusal(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await serving_oauth(api, readyz)
    readyz.logins[NS, "p"] = dict(REFUSED)
    [first] = await _heal_jobs(api, 1)
    await finish_job(api, first, "p", "refresh", outcome_line("refresh", "refreshed", "forced", "2999-01-02T00:00:00Z"))
    await status_is(api, "p", "TokenFresh", ("True", "Refreshed"))
    await asyncio.sleep(3.0)  # the proxy has not answered anything since: the same refusal stands
    assert await _heal_jobs_now(api) == [first]

    # A later refusal (a new verdict) is a new story.
    readyz.logins[NS, "p"] = {**REFUSED, "since": "2030-01-02T01:00:00Z"}
    assert len(await _heal_jobs(api, 2)) == 2


async def test_an_api_key_or_an_expired_token_is_not_refreshed(api: Api, operator: Cluster, readyz: Readyz) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "k"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await exists(api, DEPLOYMENTS, "p")
    readyz.logins[NS, "p"] = {**REFUSED, "credential": "api_key"}
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    await status_is(api, "p", "LoginValid", ("False", "LoginRefused"))
    await asyncio.sleep(1.0)
    assert await _heal_jobs_now(api) == []


async def _heal_jobs_now(api: Api) -> list[str]:
    return sorted(j["metadata"]["name"] for j in await api.list(JOBS, NS) if "-refresh-now-" in j["metadata"]["name"])
