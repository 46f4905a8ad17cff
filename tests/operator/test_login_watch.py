"""The login watch: between passes the operator reads each available proxy's /readyz and runs a pass only when the
verdict differs from `LoginValid`, so a login the proxy found refused without traffic shows within seconds, not at the
next resync, and the heal starts at once; an unchanged verdict writes nothing (in-process API server, the proxy's
/readyz served by the `readyz` fixture, as in test_reconcile_login.py)."""

from __future__ import annotations

import asyncio

import kmock
import pytest

from claude_proxy_operator.config import Config
from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, JOBS, SECRETS
from tests.operator.cluster import TEST_CLIENT, Api, Cluster, eventually, secret_data
from tests.operator.conftest import Readyz
from tests.operator.reconcile_support import (
    NS,
    condition_of,
    exists,
    posted_event,
    proxy_body,
    serving_oauth,
    status_is,
)

WATCH_SECONDS = 0.3
REFUSED = {
    "state": "refused",
    "credential": "api_key",
    "status": 401,
    "message": "invalid x-api-key (Anthropic request-id: req_01)",
}
WRITES = {kmock.method.POST, kmock.method.PUT, kmock.method.PATCH, kmock.method.DELETE}


def operator_writes(cluster: Cluster) -> int:
    """Every write the operator sent to the API server (kopf's and its own client), not the tests' own."""
    return sum(1 for r in cluster if r.method in WRITES and r.headers.get("User-Agent") != TEST_CLIENT)


async def _serving(api: Api, readyz: Readyz) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await exists(api, DEPLOYMENTS, "p")
    readyz.logins[NS, "p"] = {"state": "valid", "credential": "api_key"}
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    await status_is(api, "p", "LoginValid", ("True", "LoginAccepted"))


async def _watched(readyz: Readyz, reads: int) -> None:
    """Until the watch has read /readyz `reads` more times."""
    start = readyz.hits

    async def enough() -> bool | None:
        return readyz.hits >= start + reads or None

    await eventually(enough, what=f"{reads} more reads of /readyz")


async def _settled(cluster: Cluster) -> None:
    """Until the operator has written nothing for a second: the passes the last changes started are over."""
    last = [operator_writes(cluster)]

    async def quiet() -> bool | None:
        await asyncio.sleep(1.0)
        now = operator_writes(cluster)
        if now == last[0]:
            return True
        last[0] = now
        return None

    await eventually(quiet, timeout=20.0, what="the operator done writing")


@pytest.mark.resync(Config.resync_seconds)
@pytest.mark.login_watch(WATCH_SECONDS)
async def test_a_refusal_found_without_traffic_shows_within_seconds_at_the_default_resync(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await _serving(api, readyz)

    # Nothing changed: the watch keeps asking the proxy, and writes nothing at all.
    writes = operator_writes(operator)
    version = (await api.get(CLAUDE_PROXIES, NS, "p") or {})["metadata"]["resourceVersion"]
    await _watched(readyz, 4)
    assert operator_writes(operator) == writes
    assert (await api.get(CLAUDE_PROXIES, NS, "p") or {})["metadata"]["resourceVersion"] == version

    # The proxy's idle check finds the key refused: LoginValid=False long before the resync (60 s) comes round,
    # with the message, Ready=False and the Event of any other pass.
    readyz.logins[NS, "p"] = dict(REFUSED)
    refused = await status_is(api, "p", "LoginValid", ("False", "LoginRefused"))
    cond = next(c for c in refused["status"]["conditions"] if c["type"] == "LoginValid")
    assert "invalid x-api-key" in cond["message"] and "HTTP 401" in cond["message"]
    assert condition_of(refused, "Ready") == ("False", "LoginRefused")
    await posted_event(api, "Warning", "LoginRefused")

    # The refusal stands: no more writes, however often the watch asks.
    writes = operator_writes(operator)
    await _watched(readyz, 4)
    assert operator_writes(operator) == writes

    # A replica that has not called Anthropic yet, or no answer at all, is no new verdict: the watch leaves it.
    readyz.logins[NS, "p"] = {"state": "unknown"}
    await _watched(readyz, 3)
    del readyz.logins[NS, "p"]
    await _watched(readyz, 3)
    assert operator_writes(operator) == writes
    assert condition_of(await api.get(CLAUDE_PROXIES, NS, "p"), "LoginValid") == ("False", "LoginRefused")

    # Accepted again: cleared as quickly.
    readyz.logins[NS, "p"] = {"state": "valid", "credential": "api_key"}
    await status_is(api, "p", "LoginValid", ("True", "LoginAccepted"))
    await status_is(api, "p", "Ready", ("True", "Ready"))


@pytest.mark.resync(Config.resync_seconds)
@pytest.mark.login_watch(WATCH_SECONDS)
async def test_the_watch_asks_only_while_a_replica_is_available(api: Api, operator: Cluster, readyz: Readyz) -> None:
    await _serving(api, readyz)
    await _watched(readyz, 3)
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 0, "readyReplicas": 0}}, "status")
    await status_is(api, "p", "LoginValid", ("Unknown", "ProxyNotAvailable"))
    await asyncio.sleep(WATCH_SECONDS * 2)
    hits = readyz.hits
    readyz.logins[NS, "p"] = dict(REFUSED)
    await asyncio.sleep(WATCH_SECONDS * 5)
    assert readyz.hits == hits
    assert condition_of(await api.get(CLAUDE_PROXIES, NS, "p"), "LoginValid") == ("Unknown", "ProxyNotAvailable")


@pytest.mark.resync(Config.resync_seconds)
@pytest.mark.login_watch(WATCH_SECONDS)
async def test_a_refused_oauth_token_is_healed_at_once_at_the_default_resync(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await serving_oauth(api, readyz)
    await _settled(operator)

    readyz.logins[NS, "p"] = {
        "state": "refused",
        "credential": "oauth_file",
        "status": 401,
        "message": "OAuth token has been revoked",
        "since": "2030-01-01T01:00:00Z",
    }
    await status_is(api, "p", "LoginValid", ("False", "LoginRefused"))

    async def heal_job() -> list[str] | None:
        names = [j["metadata"]["name"] for j in await api.list(JOBS, NS) if "-refresh-now-" in j["metadata"]["name"]]
        return names or None

    assert len(await eventually(heal_job, what="the refresh Job for the refused login")) == 1
    await posted_event(api, "Normal", "RefreshStarted")
