"""The operator with an OAuth login: the seed Job, the refresh CronJob and refresh-now runs, a failed seed, and a switch
to another auth mode (in-process API server, as in test_reconcile.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kmock
import kubernetes_validate
import pytest

from claude_proxy_operator import builders
from claude_proxy_operator.kube import (
    CLAUDE_PROXIES,
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    PVCS,
    SECRETS,
)
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    K8S,
    NS,
    OAUTH_SPEC,
    condition_of,
    cron_runs,
    exists,
    finish_job,
    gone,
    outcome_line,
    pod_template,
    posted_event,
    proxy_body,
    rbac_rules,
    seed_creates,
    seed_job,
    status_is,
)

OAUTH_THEN_API_KEY = (
    rbac_rules("claudeproxy.dev", "claudeproxies", "get list patch watch")
    | rbac_rules("claudeproxy.dev", "claudeproxies/status", "patch")
    | rbac_rules("", "secrets", "get")
    | rbac_rules("", "pods", "list")
    | rbac_rules("", "events", "create")
    | rbac_rules("", "serviceaccounts services", "create get patch")
    | rbac_rules("", "persistentvolumeclaims", "create delete get patch")
    | rbac_rules("apps", "deployments", "create get list patch watch")
    | rbac_rules("batch", "jobs", "create delete get list patch watch")
    | rbac_rules("batch", "cronjobs", "create delete get patch")
    | rbac_rules("networking.k8s.io", "networkpolicies", "get")
)


async def test_oauth_seeds_once_then_serves_and_reports_refreshes(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))

    pvc = await exists(api, PVCS, "p-credentials")
    assert "ownerReferences" not in pvc["metadata"]  # retainOnDelete (the default): the login outlives the resource
    cron = await exists(api, CRONJOBS, "p-refresh")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = await seed_job(api, "p")
    seeding = await status_is(api, "p", "Seeded", ("False", "Seeding"))
    assert condition_of(seeding, "Available") == ("False", "WaitingForSeed")
    assert await api.get(DEPLOYMENTS, NS, "p") is None  # the proxy waits for the seed

    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    deploy = await exists(api, DEPLOYMENTS, "p")
    seeded = await status_is(api, "p", "Seeded", ("True", "Copied"))
    assert seeded["status"]["tokenExpiresAt"] == "2030-01-01T08:00:00Z"
    digest = job["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION]
    assert pod_template(deploy)["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] == digest
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1}}, "status")

    # A refresh the user must act on.
    await cron_runs(api, "p", 1, outcome_line("refresh", "failed", "invalid_grant"))
    failing = await status_is(api, "p", "TokenFresh", ("False", "InvalidGrant"))
    assert condition_of(failing, "Ready") == ("False", "InvalidGrant")
    assert failing["status"]["lastRefresh"]["result"] == "failed"
    await posted_event(api, "Warning", "RefreshFailed")
    # ... mended by a later successful run.
    await cron_runs(api, "p", 2, outcome_line("refresh", "refreshed", "due", "2030-01-01T16:00:00Z"))
    fresh = await status_is(api, "p", "Ready", ("True", "Ready"))
    assert fresh["status"]["tokenExpiresAt"] == "2030-01-01T16:00:00Z"
    assert condition_of(fresh, "TokenFresh") == ("True", "Refreshed")

    # Schedule and size changes reach the CronJob and the (growable) volume.
    storage = {"size": "128Mi"}
    await api.patch(
        CLAUDE_PROXIES,
        NS,
        "p",
        {"spec": {"auth": {"oauth": {"refresh": {"schedule": "0 * * * *"}, "storage": storage}}}},
    )

    async def rescheduled() -> bool:
        cron, pvc = await api.get(CRONJOBS, NS, "p-refresh"), await api.get(PVCS, NS, "p-credentials")
        return (cron or {}).get("spec", {}).get("schedule") == "0 * * * *" and (pvc or {}).get("spec", {}).get(
            "resources", {}
        ).get("requests", {}).get("storage") == "128Mi"

    await eventually(rescheduled, what="CronJob schedule and PVC size patched")

    # Resyncs never run the seed again for the same Secret content.
    await asyncio.sleep(1.0)
    assert len(seed_creates(operator)) == 1

    # New Secret content: a new seed Job replaces the old one; the proxy rolls out once it has landed.
    await api.patch(SECRETS, NS, "creds", {"data": secret_data({".credentials.json": CREDENTIALS.replace("1}", "2}")})})
    second = await seed_job(api, "p", other_than=job["metadata"]["name"])
    await gone(api, JOBS, job["metadata"]["name"])
    template = pod_template(await api.get(DEPLOYMENTS, NS, "p") or {})
    assert template["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] == digest  # not while copying
    await finish_job(
        api,
        second["metadata"]["name"],
        "p",
        "seed",
        outcome_line("seed", "skipped", "target_newer", "2030-01-01T16:00:00Z"),
    )

    async def rolled_out() -> bool:
        template = pod_template(await api.get(DEPLOYMENTS, NS, "p") or {})
        return template["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] != digest

    await eventually(rolled_out, what="rollout after the reseed")
    reseeded = await status_is(api, "p", "Seeded", ("True", "TargetNewer"))
    assert reseeded["status"]["tokenExpiresAt"] == "2030-01-01T16:00:00Z"


def _refresh_now_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    """The Jobs the operator applied for `refresh-now` requests, as it sent them."""
    return [
        body
        for resource, body in cluster.applies
        if resource == kmock.resource("batch/v1/jobs")
        and str(body.get("metadata", {}).get("name", "")).startswith("p-refresh-now-")
    ]


async def test_refresh_now_annotation_runs_one_forced_refresh_per_value(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    # Asked before the first seed has landed: it waits for the seed (an empty volume has nothing to refresh).
    body = proxy_body("p", OAUTH_SPEC)
    body["metadata"]["annotations"] = {builders.REFRESH_NOW_ANNOTATION: "first"}
    await api.create(CLAUDE_PROXIES, NS, body)
    job = await seed_job(api, "p")
    await asyncio.sleep(1.0)
    assert _refresh_now_jobs(operator) == []
    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )

    async def one_job() -> list[dict[str, Any]] | None:
        jobs = _refresh_now_jobs(operator)
        return jobs if jobs else None

    [sent] = await eventually(one_job, what="a refresh-now Job")
    cron = await exists(api, CRONJOBS, "p-refresh")
    template = cron["spec"]["jobTemplate"]
    # The CronJob's own template, its command forced: the scheduled run would answer not_due while the token is fresh.
    forced = json.loads(json.dumps(template["spec"]))
    container = forced["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], "--force"]
    assert sent["spec"] == forced
    assert container["args"][:2] == ["refresh", "--credentials"]
    assert sent["metadata"]["labels"] == template["metadata"]["labels"]
    assert [ref["kind"] for ref in sent["metadata"]["ownerReferences"]] == ["ClaudeProxy"]
    kubernetes_validate.validate(sent, K8S, strict=True)  # raises when invalid
    name = sent["metadata"]["name"]

    async def recorded() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return ((obj or {}).get("status") or {}).get("refreshNow") or None

    record = await eventually(recorded, what="status.refreshNow")
    assert record["job"] == name

    # Its pod reports like a scheduled run's, into lastRefresh.
    await finish_job(api, name, "p", "refresh", outcome_line("refresh", "refreshed", "forced", "2030-01-01T18:00:00Z"))

    async def refreshed() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        last = ((obj or {}).get("status") or {}).get("lastRefresh") or {}
        return obj if last.get("reason") == "forced" else None

    done = await eventually(refreshed, what="the forced refresh in lastRefresh")
    assert done["status"]["tokenExpiresAt"] == "2030-01-01T18:00:00Z"

    # Once per value: not again on resyncs, nor after the finished Job has expired (ttlSecondsAfterFinished).
    await api.delete(JOBS, NS, name)
    await asyncio.sleep(1.0)
    assert len(_refresh_now_jobs(operator)) == 1
    # A new value: a new run.
    await api.patch(CLAUDE_PROXIES, NS, "p", {"metadata": {"annotations": {builders.REFRESH_NOW_ANNOTATION: "2nd"}}})
    second = await eventually(lambda: _wait_jobs(operator, 2), what="a second refresh-now Job")
    assert second[1]["metadata"]["name"] != name
    assert second[1]["spec"] == sent["spec"]
    await asyncio.sleep(1.0)
    assert len(_refresh_now_jobs(operator)) == 2


async def _wait_jobs(cluster: Cluster, count: int) -> list[dict[str, Any]] | None:
    jobs = _refresh_now_jobs(cluster)
    return jobs if len(jobs) >= count else None


async def test_failed_seed_is_reported_and_not_retried_until_the_secret_changes(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": "{}"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    job = await seed_job(api, "p")
    await finish_job(api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "failed", "malformed"))
    failed = await status_is(api, "p", "Seeded", ("False", "Malformed"))
    assert condition_of(failed, "Ready") == ("False", "Malformed")
    assert failed["status"]["seed"]["result"] == "failed"
    await asyncio.sleep(1.0)
    assert await api.get(DEPLOYMENTS, NS, "p") is None
    jobs = [j["metadata"]["name"] for j in await api.list(JOBS, NS)]
    assert jobs == [job["metadata"]["name"]]
    await posted_event(api, "Warning", "SeedFailed")


@pytest.mark.uses_rbac(OAUTH_THEN_API_KEY)
async def test_switching_auth_mode_removes_what_the_old_mode_needed(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    spec = {"auth": {"oauth": {"seedSecretRef": {"name": "creds"}, "storage": {"retainOnDelete": False}}}}
    proxy = await api.create(CLAUDE_PROXIES, NS, proxy_body("p", spec))
    pvc = await exists(api, PVCS, "p-credentials")
    assert [r["uid"] for r in pvc["metadata"]["ownerReferences"]] == [proxy["metadata"]["uid"]]
    job = await seed_job(api, "p")
    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    await exists(api, DEPLOYMENTS, "p")

    await api.patch(
        CLAUDE_PROXIES, NS, "p", {"spec": {"auth": {"oauth": None, "apiKey": {"secretRef": {"name": "key"}}}}}
    )
    await gone(api, CRONJOBS, "p-refresh")
    await gone(api, JOBS, job["metadata"]["name"])
    await gone(api, PVCS, "p-credentials")

    async def switched() -> dict[str, Any] | None:
        deploy = await api.get(DEPLOYMENTS, NS, "p")
        env = {e["name"] for e in pod_template(deploy or {})["spec"]["containers"][0]["env"]}
        return deploy if "ANTHROPIC_API_KEY" in env and "CLAUDE_CREDENTIALS_PATH" not in env else None

    deploy = await eventually(switched, what="the Deployment in apiKey mode")
    pod = pod_template(deploy)["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "affinity" not in pod
    st = await status_is(api, "p", "Seeded", ("True", "NotRequired"))
    assert st["status"]["authMode"] == "apiKey" and "seed" not in st["status"] and "tokenExpiresAt" not in st["status"]
