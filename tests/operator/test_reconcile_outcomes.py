"""Every finished seed and refresh Job means something, also when its pod left no readable outcome (an evicted or
deleted pod, an image that writes none): a condition and an Event say what is known and where to look, and a seed
that exited successfully lets the proxy start (in-process API server, as in test_reconcile_oauth.py)."""

from __future__ import annotations

from typing import Any

from claude_proxy_operator import builders
from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, JOBS, SECRETS
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    NS,
    OAUTH_SPEC,
    condition_of,
    exists,
    finish_job,
    outcome_line,
    posted_event,
    proxy_body,
    seed_job,
    status_is,
)


async def _job_ends_without_outcome(api: Api, job: str, ok: bool) -> None:
    """What the Job controller leaves when the pod that ran is gone (evicted, deleted): a condition, no pod."""
    condition = {"type": "Complete" if ok else "Failed", "status": "True", "lastTransitionTime": "2030-01-02T00:00:00Z"}
    await api.patch(JOBS, NS, job, {"status": {"conditions": [condition]}}, "status")


async def _proxy(api: Api) -> dict[str, Any]:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    return await seed_job(api, "p")


async def test_a_seed_that_succeeded_without_an_outcome_starts_the_proxy_and_says_so(
    api: Api, operator: Cluster
) -> None:
    job = await _proxy(api)
    name = job["metadata"]["name"]
    await _job_ends_without_outcome(api, name, ok=True)

    await exists(api, DEPLOYMENTS, "p")  # the Job exited 0: the volume holds a login
    seeded = await status_is(api, "p", "Seeded", ("True", "NoOutcome"))
    assert seeded["status"]["seed"]["result"] == "unreported"
    assert name in seeded["status"]["seed"]["message"]
    event = await posted_event(api, "Warning", "SeedOutcomeMissing")
    assert f"kubectl logs job/{name}" in event["message"]


async def test_a_seed_that_failed_without_an_outcome_names_its_job(api: Api, operator: Cluster) -> None:
    job = await _proxy(api)
    name = job["metadata"]["name"]
    await _job_ends_without_outcome(api, name, ok=False)

    failed = await status_is(api, "p", "Seeded", ("False", "JobFailed"))
    assert f"describe job/{name}" in failed["status"]["seed"]["message"]
    assert await api.get(DEPLOYMENTS, NS, "p") is None
    await posted_event(api, "Warning", "SeedFailed")


async def test_refresh_jobs_that_ended_without_an_outcome_are_reported(api: Api, operator: Cluster) -> None:
    job = await _proxy(api)
    line = outcome_line("seed", "copied", "forced", "2999-01-01T08:00:00Z")
    await finish_job(api, job["metadata"]["name"], "p", "seed", line)
    await status_is(api, "p", "TokenFresh", ("True", "Valid"))

    # A scheduled run whose pod is gone: it failed, nobody knows why; the token is still valid.
    refresh = builders.labels("p", "refresh")
    await api.create(JOBS, NS, {"metadata": {"name": "p-refresh-1", "labels": refresh}, "spec": {}})
    await _job_ends_without_outcome(api, "p-refresh-1", ok=False)
    retrying = await status_is(api, "p", "TokenFresh", ("True", "RefreshRetrying"))
    assert retrying["status"]["lastRefresh"]["reason"] == "job_failed"
    event = await posted_event(api, "Warning", "RefreshFailed")
    assert "p-refresh-1" in event["message"]

    # A later run that succeeded without an outcome: known to have exited 0, not what it did.
    await api.create(JOBS, NS, {"metadata": {"name": "p-refresh-2", "labels": refresh}, "spec": {}})
    condition = {"type": "Complete", "status": "True", "lastTransitionTime": "2030-01-03T00:00:00Z"}
    await api.patch(JOBS, NS, "p-refresh-2", {"status": {"conditions": [condition]}}, "status")

    async def unreported() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        last = ((obj or {}).get("status") or {}).get("lastRefresh") or {}
        return obj if last.get("result") == "unreported" else None

    done = await eventually(unreported, what="the unreported refresh in lastRefresh")
    assert condition_of(done, "TokenFresh") == ("True", "Valid")
    event = await posted_event(api, "Warning", "RefreshOutcomeMissing")
    assert "p-refresh-2" in event["message"]
