"""A seed Secret whose refresh token a refresh has spent: marked consumed in status, and never used to seed a new
volume (the next refresh would fail with invalid_grant): a condition and an Event ask for a new login instead
(in-process API server, as in test_reconcile_oauth.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from claude_proxy_operator.kube import CLAUDE_PROXIES, PVCS, SECRETS
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    NS,
    OAUTH_SPEC,
    cron_runs,
    exists,
    finish_job,
    outcome_line,
    posted_event,
    proxy_body,
    seed_creates,
    seed_job,
    status_is,
)


async def _spent_record(api: Api) -> dict[str, Any] | None:
    obj = await api.get(CLAUDE_PROXIES, NS, "p")
    return ((obj or {}).get("status") or {}).get("seedSecret") or None


async def test_a_spent_seed_secret_is_marked_and_not_used_for_a_new_volume(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    job = await seed_job(api, "p")
    line = outcome_line("seed", "copied", "forced", "2999-01-01T08:00:00Z")
    await finish_job(api, job["metadata"]["name"], "p", "seed", line)
    await status_is(api, "p", "Seeded", ("True", "Copied"))
    await asyncio.sleep(1.0)
    assert await _spent_record(api) is None  # seeded, not refreshed yet: the Secret's login is still good

    # A refresh rotates the refresh token: the Secret's copy is spent.
    await cron_runs(api, "p", 1, outcome_line("refresh", "refreshed", "due", "2999-01-01T16:00:00Z"))
    spent = await eventually(lambda: _spent_record(api), what="status.seedSecret")
    assert spent["name"] == "creds" and spent["consumedAt"]

    # The volume is lost and made anew: it is not seeded from the spent login.
    old_uid = (await exists(api, PVCS, "p-credentials"))["metadata"]["uid"]
    await api.delete(PVCS, NS, "p-credentials")

    async def new_volume() -> dict[str, Any] | None:
        pvc = await api.get(PVCS, NS, "p-credentials")
        return pvc if pvc and pvc["metadata"]["uid"] != old_uid else None

    await eventually(new_volume, what="a new volume")
    refused = await status_is(api, "p", "Seeded", ("False", "SeedSecretSpent"))
    seeded = next(c for c in refused["status"]["conditions"] if c["type"] == "Seeded")
    assert "claude auth login" in seeded["message"] and "Secret creds" in seeded["message"]
    event = await posted_event(api, "Warning", "SeedSecretSpent")
    assert "Secret creds" in event["message"]
    await asyncio.sleep(1.0)
    assert len(seed_creates(operator)) == 1

    # A new login in the Secret: the new volume is seeded from it.
    fresh = CREDENTIALS.replace("1}", "2}")
    await api.patch(SECRETS, NS, "creds", {"data": secret_data({".credentials.json": fresh})})
    await seed_job(api, "p", other_than=job["metadata"]["name"])
    assert len(seed_creates(operator)) == 2
