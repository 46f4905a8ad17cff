"""The LoginValid condition: the operator asks the proxy's readyz for Anthropic's verdict on its login and reports it
in the status and, once per transition, as an Event (in-process API server, as in test_reconcile.py)."""

from __future__ import annotations

import asyncio

from claude_proxy_operator.kube import (
    CLAUDE_PROXIES,
    DEPLOYMENTS,
    SECRETS,
)
from tests.operator.cluster import Api, Cluster, secret_data
from tests.operator.conftest import Readyz
from tests.operator.reconcile_support import (
    EVENTS,
    NS,
    condition_of,
    exists,
    posted_event,
    proxy_body,
    status_is,
    status_write_count,
)


async def _login_story(api: Api, operator: Cluster, readyz: Readyz, *, events: bool) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await exists(api, DEPLOYMENTS, "p")
    waiting = await status_is(api, "p", "LoginValid", ("Unknown", "ProxyNotAvailable"))
    assert readyz.hits == 0  # nothing to ask while no replica is available

    # A replica is up but has not called Anthropic yet.
    readyz.logins[NS, "p"] = {"state": "unknown"}
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    await status_is(api, "p", "LoginValid", ("Unknown", "NoRequestYet"))
    await status_is(api, "p", "Ready", ("True", "Ready"))

    # Anthropic refuses the key: the resync loop picks it up, without any event in the cluster.
    readyz.logins[NS, "p"] = {
        "state": "refused",
        "credential": "api_key",
        "status": 401,
        "message": "invalid x-api-key (Anthropic request-id: req_01)",
    }
    refused = await status_is(api, "p", "LoginValid", ("False", "LoginRefused"))
    cond = next(c for c in refused["status"]["conditions"] if c["type"] == "LoginValid")
    assert "invalid x-api-key" in cond["message"] and "HTTP 401" in cond["message"]
    assert "Secret key" in cond["message"]  # what to do, and where
    assert condition_of(refused, "Ready") == ("False", "LoginRefused")
    if events:
        warning = await posted_event(api, "Warning", "LoginRefused")
        assert "invalid x-api-key" in warning["message"]

    # Several passes over the same verdict: no new Event, no status write.
    writes = status_write_count(operator)
    await asyncio.sleep(1.5)
    assert status_write_count(operator) == writes
    if events:
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginRefused"]) == 1

    # A pod that has not called Anthropic yet answers next: the refusal stands.
    readyz.logins[NS, "p"] = {"state": "unknown"}
    await asyncio.sleep(1.0)
    assert condition_of(await api.get(CLAUDE_PROXIES, NS, "p"), "LoginValid") == ("False", "LoginRefused")

    # A request succeeds again: the condition clears itself, once.
    readyz.logins[NS, "p"] = {"state": "valid", "credential": "api_key"}
    await status_is(api, "p", "LoginValid", ("True", "LoginAccepted"))
    await status_is(api, "p", "Ready", ("True", "Ready"))
    if events:
        await posted_event(api, "Normal", "LoginAccepted")
        await asyncio.sleep(1.0)
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginAccepted"]) == 1
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginRefused"]) == 1

    # The proxy cannot be reached: Unknown, and no Event.
    del readyz.logins[NS, "p"]
    await status_is(api, "p", "LoginValid", ("Unknown", "ProxyUnreachable"))
    assert waiting["status"]["authMode"] == "apiKey"


async def test_a_refused_login_shows_in_status_within_a_resync_and_clears(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await _login_story(api, operator, readyz, events=False)


async def test_a_refused_login_posts_one_event_per_transition(api: Api, operator: Cluster, readyz: Readyz) -> None:
    await _login_story(api, operator, readyz, events=True)
