"""The operator end to end: kopf, the handlers and the reconciler against an in-process API server (kmock).

The tests play the user (kubectl apply/patch/delete) and the controllers a cluster would run (a Deployment becoming
available, a Job's pod terminating with its outcome line), and assert on the objects and the status the operator
leaves behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest

from claude_proxy_operator import builders, rbac
from claude_proxy_operator.handlers import CHILD_SELECTOR
from claude_proxy_operator.kube import (
    CLAUDE_PROXIES,
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    NETWORK_POLICIES,
    PODS,
    PVCS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    Resource,
)
from tests.operator import crdtools
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.conftest import RESYNC_SECONDS, Readyz

NS = "rockbot"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's default finalizer name
K8S = kubernetes_validate.latest_version()
EVENTS = Resource("", "v1", "events", "Event")
CHILD_KINDS = {"serviceaccounts", "services", "deployments", "persistentvolumeclaims", "jobs", "cronjobs",
               "networkpolicies"}  # fmt: skip
# Each RBAC rule is used by a test marked `uses_rbac` (the operator fixture checks the mark against the requests the
# test made), so a rule nothing needs any more fails a test run alone, in any order.


def _rules(group: str, resources: str, verbs: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for resource in resources.split() for verb in verbs.split()}


NETWORK_POLICY_WRITES = _rules("networking.k8s.io", "networkpolicies", "create delete patch")
OAUTH_THEN_API_KEY = (
    _rules("claudeproxy.dev", "claudeproxies", "get list patch watch")
    | _rules("claudeproxy.dev", "claudeproxies/status", "patch")
    | _rules("", "secrets", "get")
    | _rules("", "pods", "list")
    | _rules("", "events", "create")
    | _rules("", "serviceaccounts services", "create get patch")
    | _rules("", "persistentvolumeclaims", "create delete get patch")
    | _rules("apps", "deployments", "create get list patch watch")
    | _rules("batch", "jobs", "create delete get list patch watch")
    | _rules("batch", "cronjobs", "create delete get patch")
    | _rules("networking.k8s.io", "networkpolicies", "get")
)


def _proxy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def _cond(obj: dict[str, Any] | None, kind: str) -> tuple[str, str] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c["status"], c["reason"]
    return None


async def _status_is(api: Api, name: str, kind: str, expected: tuple[str, str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, name)
        return obj if _cond(obj, kind) == expected else None

    return await eventually(probe, what=f"{kind}={expected}")


async def _exists(api: Api, res: Resource, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await api.get(res, NS, name)

    return await eventually(probe, what=f"{res.kind} {name}")


async def _gone(api: Api, res: Resource, name: str) -> bool:
    async def probe() -> bool:
        return await api.get(res, NS, name) is None

    return await eventually(probe, what=f"{res.kind} {name} deleted")


async def _event(api: Api, kind: str, reason: str) -> dict[str, Any]:
    """Events are posted by the reconciler from whichever pass writes the new status: wait for one."""

    async def probe() -> dict[str, Any] | None:
        found = [e for e in await api.list(EVENTS, NS) if (e["type"], e["reason"]) == (kind, reason)]
        return found[0] if found else None

    return await eventually(probe, what=f"{kind} Event {reason}")


def _child_writes(cluster: Cluster) -> list[str]:
    return [
        f"{r.method} {r.url.path}"
        for r in cluster
        if r.resource is not None
        and r.resource.plural in CHILD_KINDS
        and r.method in (kmock.method.POST, kmock.method.PATCH, kmock.method.DELETE)
    ]


async def _endpoint_is(api: Api, expected: str) -> bool:
    obj = await api.get(CLAUDE_PROXIES, NS, "p")
    return bool(obj and obj.get("status", {}).get("endpoint") == expected)


def _seed_creates(cluster: Cluster) -> list[str]:
    """Seed Jobs created (by the server-side apply that found no Job of that name)."""
    return [
        str(r.name)
        for r in cluster
        if r.id in cluster.apply_created
        and r.resource == kmock.resource("batch/v1/jobs")
        and str(r.name).startswith("p-seed-")
    ]


def _reads(cluster: Cluster, res: Resource, name: str = "p") -> int:
    """GETs of one object by name, e.g. one ClaudeProxy read per reconcile pass."""
    return sum(1 for r in cluster if r.method == kmock.method.GET and r.name == name and not r.subresource
               and r.resource is not None and r.resource.plural == res.plural)  # fmt: skip


def _status_writes(cluster: Cluster) -> int:
    return sum(1 for r in cluster if r.method == kmock.method.PATCH and r.subresource == "status" and r.resource
               and r.resource.plural == "claudeproxies")  # fmt: skip


def _template(deploy: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = deploy["spec"]["template"]
    return template


async def test_api_key_mode_creates_children_reports_status_and_converges(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    proxy = await api.create(CLAUDE_PROXIES, NS, _proxy("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    uid = proxy["metadata"]["uid"]

    deploy = await _exists(api, DEPLOYMENTS, "p")
    svc = await _exists(api, SERVICES, "p")
    sa = await _exists(api, SERVICE_ACCOUNTS, "p")
    for child in (deploy, svc, sa):
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [("ClaudeProxy", uid, True)]
        # written by server-side apply, as the operator's field manager
        assert {"manager": "claude-proxy-operator", "operation": "Apply"} in child["metadata"]["managedFields"]
    assert not any(r.method == kmock.method.POST and r.resource.plural in CHILD_KINDS for r in operator if r.resource)
    env = {e["name"]: e for e in _template(deploy)["spec"]["containers"][0]["env"]}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "key", "key": "api-key"}}
    assert await api.get(PVCS, NS, "p-credentials") is None
    assert await api.get(CRONJOBS, NS, "p-refresh") is None
    assert await api.get(NETWORK_POLICIES, NS, "p") is None

    waiting = await _status_is(api, "p", "Available", ("False", "NoReplicasAvailable"))
    assert waiting["status"]["endpoint"] == "http://p.rockbot.svc.cluster.local/v1"
    assert waiting["status"]["authMode"] == "apiKey"
    assert _cond(waiting, "CredentialsReady") == ("True", "SecretsFound")
    assert _cond(waiting, "Ready") == ("False", "NoReplicasAvailable")

    # The Deployment controller reports a replica available: the status follows without any resync.
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    ready = await _status_is(api, "p", "Ready", ("True", "Ready"))
    assert all(c["observedGeneration"] == 1 for c in ready["status"]["conditions"])

    # Converged: several resync passes later, nothing was written again, to a child or to the status; and each pass
    # read the Deployment once.
    writes, status_writes = _child_writes(operator), _status_writes(operator)
    passes, deployment_reads = _reads(operator, CLAUDE_PROXIES), _reads(operator, DEPLOYMENTS)
    await asyncio.sleep(1.5)
    assert _child_writes(operator) == writes
    assert _status_writes(operator) == status_writes
    passes, deployment_reads = (
        _reads(operator, CLAUDE_PROXIES) - passes,
        _reads(operator, DEPLOYMENTS) - deployment_reads,
    )
    assert passes >= 2 and deployment_reads <= passes + 1  # + 1: a pass cut in two by the window's end
    ready_event = await _event(api, "Normal", "Ready")
    assert ready_event["involvedObject"]["uid"] == uid
    assert ready_event["involvedObject"]["kind"] == "ClaudeProxy"
    assert ready_event["reportingComponent"] == ready_event["source"]["component"] == "claude-proxy-operator"
    await asyncio.sleep(0.5)
    assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "Ready"]) == 1


@pytest.mark.uses_rbac(NETWORK_POLICY_WRITES)
async def test_spec_update_patches_children_and_removes_what_was_turned_off(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await _exists(api, DEPLOYMENTS, "p")
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1}}, "status")

    update = {
        "replicas": 2,
        "nodeSelector": {"pool": "ai"},
        "networkPolicy": {"enabled": True},
        "model": {"default": "claude-x"},
    }
    await api.patch(CLAUDE_PROXIES, NS, "p", {"spec": update})

    async def rolled() -> dict[str, Any] | None:
        deploy = await api.get(DEPLOYMENTS, NS, "p")
        return deploy if deploy and deploy["spec"]["replicas"] == 2 else None

    deploy = await eventually(rolled, what="replicas 2")
    pod = _template(deploy)["spec"]
    assert pod["nodeSelector"] == {"pool": "ai"}
    assert {"name": "PROXY_DEFAULT_MODEL", "value": "claude-x"} in pod["containers"][0]["env"]
    assert deploy["status"] == {"availableReplicas": 1}  # what others own is left alone
    await _exists(api, NETWORK_POLICIES, "p")

    async def observed() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return obj if obj and obj.get("status", {}).get("observedGeneration") == 2 else None

    st = await eventually(observed, what="observedGeneration 2")
    assert _cond(st, "Ready") == ("True", "Ready")
    assert {c["observedGeneration"] for c in st["status"]["conditions"]} == {2}

    # Service port, callers, and the resource's own labels (which kopf.adopt copies to every child).
    allow = [{"namespaceSelector": {"matchLabels": {"team": "bots"}}}]
    await api.patch(
        CLAUDE_PROXIES,
        NS,
        "p",
        {
            "metadata": {"labels": {"team": "bots"}},
            "spec": {"service": {"port": 8080}, "networkPolicy": {"allowFrom": allow}},
        },
    )

    async def relabelled() -> bool:
        sa, svc, netpol = [await api.get(r, NS, "p") for r in (SERVICE_ACCOUNTS, SERVICES, NETWORK_POLICIES)]
        return (
            (sa or {}).get("metadata", {}).get("labels", {}).get("team") == "bots"
            and (svc or {}).get("spec", {}).get("ports", [{}])[0].get("port") == 8080
            and (netpol or {}).get("spec", {}).get("ingress", [{}])[0].get("from") == allow
        )

    await eventually(relabelled, what="ServiceAccount, Service and NetworkPolicy patched")
    await eventually(
        lambda: _endpoint_is(api, "http://p.rockbot.svc.cluster.local:8080/v1"), what="endpoint on the new port"
    )

    await api.patch(
        CLAUDE_PROXIES,
        NS,
        "p",
        {"spec": {"nodeSelector": None, "networkPolicy": {"enabled": False, "allowFrom": None}}},
    )

    async def unpinned() -> dict[str, Any] | None:
        deploy = await api.get(DEPLOYMENTS, NS, "p")
        return deploy if deploy and "nodeSelector" not in _template(deploy)["spec"] else None

    deploy = await eventually(unpinned, what="nodeSelector removed")
    assert deploy["spec"]["replicas"] == 2
    await _gone(api, NETWORK_POLICIES, "p")


async def test_changed_secret_content_rolls_the_proxy_out(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "token"}, "data": secret_data({"token": "test-token-1"})})
    await api.create(SECRETS, NS, {"metadata": {"name": "clients"}, "data": secret_data({"keys": "client-1"})})
    spec = {
        "auth": {"accessToken": {"secretRef": {"name": "token"}}},
        "clientAuth": {"apiKeysSecretRef": {"name": "clients"}},
    }
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", spec))
    first = _template(await _exists(api, DEPLOYMENTS, "p"))

    async def checksum_changed(previous: dict[str, Any]) -> dict[str, Any] | None:
        template = _template(await api.get(DEPLOYMENTS, NS, "p") or {})
        old = previous["metadata"]["annotations"][builders.CHECKSUM_ANNOTATION]
        return template if template["metadata"]["annotations"][builders.CHECKSUM_ANNOTATION] != old else None

    await api.patch(SECRETS, NS, "token", {"data": secret_data({"token": "test-token-2"})})
    second = await eventually(lambda: checksum_changed(first), what="rollout after the token changed")
    assert second["spec"] == first["spec"]  # only the checksum moved: the env still points at the Secret
    await api.patch(SECRETS, NS, "clients", {"data": secret_data({"keys": "client-1,client-2"})})
    await eventually(lambda: checksum_changed(second), what="rollout after the client keys changed")


_clock = iter(range(10_000))


def _finished_at() -> str:
    """Strictly increasing finish times, one second apart, as pods finishing one after another would report."""
    n = next(_clock)
    return f"2030-01-01T00:{n // 60:02d}:{n % 60:02d}Z"


def _line(command: str, result: str, reason: str, expires: str | None = None) -> str:
    message = {"copied": "credentials copied", "failed": f"{command} failed", "refreshed": "token refreshed"}
    payload = {"command": command, "result": result, "reason": reason, "message": message.get(result, result),
               "expiresAt": expires}  # fmt: skip
    return json.dumps(payload) + "\n"


async def _finish_job(api: Api, job: str, instance: str, component: str, line: str) -> None:
    """What the Job controller and the kubelet would leave: a terminated pod with the outcome line, a Job condition."""
    ok = '"failed"' not in line
    await api.create(
        PODS,
        NS,
        {
            "metadata": {"name": f"{job}-x1", "labels": {**builders.selector(instance, component), "job-name": job}},
            "spec": {"containers": [{"name": "claude-proxy", "image": "img"}]},
            "status": {
                "phase": "Succeeded" if ok else "Failed",
                "containerStatuses": [
                    {
                        "name": "claude-proxy",
                        "state": {
                            "terminated": {"exitCode": 0 if ok else 1, "finishedAt": _finished_at(), "message": line}
                        },
                    }
                ],
            },
        },
    )
    condition = {"type": "Complete" if ok else "Failed", "status": "True"}
    await api.patch(JOBS, NS, job, {"status": {"conditions": [condition]}}, "status")


async def _cron_runs(api: Api, instance: str, run: int, line: str) -> None:
    """The CronJob controller starts a refresh Job, and its pod finishes with `line`."""
    job = f"{instance}-refresh-{run}"
    await api.create(JOBS, NS, {"metadata": {"name": job, "labels": builders.labels(instance, "refresh")}, "spec": {}})
    await _finish_job(api, job, instance, "refresh", line)


async def _seed_job(api: Api, instance: str, other_than: str | None = None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        jobs = [j for j in await api.list(JOBS, NS) if j["metadata"]["name"].startswith(f"{instance}-seed-")]
        fresh = [j for j in jobs if j["metadata"]["name"] != other_than]
        return fresh[0] if len(fresh) == 1 else None

    return await eventually(probe, what="one seed Job")


OAUTH_SPEC = {"auth": {"oauth": {"seedSecretRef": {"name": "creds"}}}}
CREDENTIALS = '{"claudeAiOauth": {"accessToken": "placeholder", "refreshToken": "placeholder", "expiresAt": 1}}'


async def test_oauth_seeds_once_then_serves_and_reports_refreshes(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", OAUTH_SPEC))

    pvc = await _exists(api, PVCS, "p-credentials")
    assert "ownerReferences" not in pvc["metadata"]  # retainOnDelete (the default): the login outlives the resource
    cron = await _exists(api, CRONJOBS, "p-refresh")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = await _seed_job(api, "p")
    seeding = await _status_is(api, "p", "Seeded", ("False", "Seeding"))
    assert _cond(seeding, "Available") == ("False", "WaitingForSeed")
    assert await api.get(DEPLOYMENTS, NS, "p") is None  # the proxy waits for the seed

    await _finish_job(
        api, job["metadata"]["name"], "p", "seed", _line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    deploy = await _exists(api, DEPLOYMENTS, "p")
    seeded = await _status_is(api, "p", "Seeded", ("True", "Copied"))
    assert seeded["status"]["tokenExpiresAt"] == "2030-01-01T08:00:00Z"
    digest = job["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION]
    assert _template(deploy)["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] == digest
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1}}, "status")

    # A refresh the user must act on.
    await _cron_runs(api, "p", 1, _line("refresh", "failed", "invalid_grant"))
    failing = await _status_is(api, "p", "TokenFresh", ("False", "InvalidGrant"))
    assert _cond(failing, "Ready") == ("False", "InvalidGrant")
    assert failing["status"]["lastRefresh"]["result"] == "failed"
    await _event(api, "Warning", "RefreshFailed")
    # ... mended by a later successful run.
    await _cron_runs(api, "p", 2, _line("refresh", "refreshed", "due", "2030-01-01T16:00:00Z"))
    fresh = await _status_is(api, "p", "Ready", ("True", "Ready"))
    assert fresh["status"]["tokenExpiresAt"] == "2030-01-01T16:00:00Z"
    assert _cond(fresh, "TokenFresh") == ("True", "Refreshed")

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
    assert len(_seed_creates(operator)) == 1

    # New Secret content: a new seed Job replaces the old one; the proxy rolls out once it has landed.
    await api.patch(SECRETS, NS, "creds", {"data": secret_data({".credentials.json": CREDENTIALS.replace("1}", "2}")})})
    second = await _seed_job(api, "p", other_than=job["metadata"]["name"])
    await _gone(api, JOBS, job["metadata"]["name"])
    template = _template(await api.get(DEPLOYMENTS, NS, "p") or {})
    assert template["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] == digest  # not while copying
    await _finish_job(
        api, second["metadata"]["name"], "p", "seed", _line("seed", "skipped", "target_newer", "2030-01-01T16:00:00Z")
    )

    async def rolled_out() -> bool:
        template = _template(await api.get(DEPLOYMENTS, NS, "p") or {})
        return template["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] != digest

    await eventually(rolled_out, what="rollout after the reseed")
    reseeded = await _status_is(api, "p", "Seeded", ("True", "TargetNewer"))
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
    body = _proxy("p", OAUTH_SPEC)
    body["metadata"]["annotations"] = {builders.REFRESH_NOW_ANNOTATION: "first"}
    await api.create(CLAUDE_PROXIES, NS, body)
    job = await _seed_job(api, "p")
    await asyncio.sleep(1.0)
    assert _refresh_now_jobs(operator) == []
    await _finish_job(
        api, job["metadata"]["name"], "p", "seed", _line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )

    async def one_job() -> list[dict[str, Any]] | None:
        jobs = _refresh_now_jobs(operator)
        return jobs if jobs else None

    [sent] = await eventually(one_job, what="a refresh-now Job")
    cron = await _exists(api, CRONJOBS, "p-refresh")
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
    await _finish_job(api, name, "p", "refresh", _line("refresh", "refreshed", "forced", "2030-01-01T18:00:00Z"))

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
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", OAUTH_SPEC))
    job = await _seed_job(api, "p")
    await _finish_job(api, job["metadata"]["name"], "p", "seed", _line("seed", "failed", "malformed"))
    failed = await _status_is(api, "p", "Seeded", ("False", "Malformed"))
    assert _cond(failed, "Ready") == ("False", "Malformed")
    assert failed["status"]["seed"]["result"] == "failed"
    await asyncio.sleep(1.0)
    assert await api.get(DEPLOYMENTS, NS, "p") is None
    jobs = [j["metadata"]["name"] for j in await api.list(JOBS, NS)]
    assert jobs == [job["metadata"]["name"]]
    await _event(api, "Warning", "SeedFailed")


@pytest.mark.uses_rbac(OAUTH_THEN_API_KEY)
async def test_switching_auth_mode_removes_what_the_old_mode_needed(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    spec = {"auth": {"oauth": {"seedSecretRef": {"name": "creds"}, "storage": {"retainOnDelete": False}}}}
    proxy = await api.create(CLAUDE_PROXIES, NS, _proxy("p", spec))
    pvc = await _exists(api, PVCS, "p-credentials")
    assert [r["uid"] for r in pvc["metadata"]["ownerReferences"]] == [proxy["metadata"]["uid"]]
    job = await _seed_job(api, "p")
    await _finish_job(
        api, job["metadata"]["name"], "p", "seed", _line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    await _exists(api, DEPLOYMENTS, "p")

    await api.patch(
        CLAUDE_PROXIES, NS, "p", {"spec": {"auth": {"oauth": None, "apiKey": {"secretRef": {"name": "key"}}}}}
    )
    await _gone(api, CRONJOBS, "p-refresh")
    await _gone(api, JOBS, job["metadata"]["name"])
    await _gone(api, PVCS, "p-credentials")

    async def switched() -> dict[str, Any] | None:
        deploy = await api.get(DEPLOYMENTS, NS, "p")
        env = {e["name"] for e in _template(deploy or {})["spec"]["containers"][0]["env"]}
        return deploy if "ANTHROPIC_API_KEY" in env and "CLAUDE_CREDENTIALS_PATH" not in env else None

    deploy = await eventually(switched, what="the Deployment in apiKey mode")
    pod = _template(deploy)["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "affinity" not in pod
    st = await _status_is(api, "p", "Seeded", ("True", "NotRequired"))
    assert st["status"]["authMode"] == "apiKey" and "seed" not in st["status"] and "tokenExpiresAt" not in st["status"]


async def test_delete_cleans_up_but_keeps_a_retained_login(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", {**OAUTH_SPEC, "networkPolicy": {"enabled": True}}))
    job = await _seed_job(api, "p")
    await _finish_job(
        api, job["metadata"]["name"], "p", "seed", _line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    await _exists(api, DEPLOYMENTS, "p")
    await _exists(api, NETWORK_POLICIES, "p")

    await api.delete(CLAUDE_PROXIES, NS, "p")
    for res, name in [(DEPLOYMENTS, "p"), (SERVICES, "p"), (SERVICE_ACCOUNTS, "p"), (NETWORK_POLICIES, "p"),
                      (CRONJOBS, "p-refresh"), (JOBS, job["metadata"]["name"])]:  # fmt: skip
        await _gone(api, res, name)
    assert await api.get(PVCS, NS, "p-credentials") is not None
    await _gone(api, CLAUDE_PROXIES, "p")  # no finalizer holds it

    # A new resource of the same name adopts the kept volume; its seed Job is the same (same volume, same Secret)
    # and `claude-proxy seed` leaves the volume's newer credentials alone.
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", OAUTH_SPEC))
    second = await _seed_job(api, "p")
    assert second["metadata"]["name"] == job["metadata"]["name"]


async def test_a_proxy_carries_no_finalizer_so_deleting_it_never_waits_for_the_operator(
    api: Api, operator: Cluster
) -> None:
    # As an older operator left it: kopf's finalizer, which holds a deletion until an operator removes it. With the
    # operator uninstalled first (helm uninstall), the resource would stay Terminating for good.
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    body = _proxy("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}})
    body["metadata"]["finalizers"] = [KOPF_FINALIZER]
    await api.create(CLAUDE_PROXIES, NS, body)
    await _exists(api, DEPLOYMENTS, "p")

    async def released() -> bool:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return bool(obj) and not (obj or {}).get("metadata", {}).get("finalizers")

    await eventually(released, what="the old finalizer removed")
    await asyncio.sleep(3 * RESYNC_SECONDS)  # resync passes do not add one back
    assert await released()
    await api.delete(CLAUDE_PROXIES, NS, "p")
    assert await api.get(CLAUDE_PROXIES, NS, "p") is None  # gone at once, children by their ownerReferences
    await _gone(api, DEPLOYMENTS, "p")


async def test_children_are_watched_through_a_server_side_selector(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await _exists(api, DEPLOYMENTS, "p")
    selectors: dict[str, set[str | None]] = {}
    for r in operator:
        if r.resource is not None and r.params.get("watch") == "true":
            selectors.setdefault(str(r.resource.plural), set()).add(r.params.get("labelSelector"))
    assert selectors["deployments"] == {CHILD_SELECTOR}
    assert selectors["jobs"] == {CHILD_SELECTOR}
    assert selectors["claudeproxies"] == {None}  # every ClaudeProxy, whatever its labels


async def test_invalid_spec_is_reported_and_builds_nothing(api: Api, operator: Cluster) -> None:
    both = {"auth": {"apiKey": {"secretRef": {"name": "k"}}, "accessToken": {"secretRef": {"name": "t"}}}}
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", both))
    st = await _status_is(api, "p", "Ready", ("False", "InvalidSpec"))
    assert "exactly one" in next(c for c in st["status"]["conditions"] if c["type"] == "Ready")["message"]
    await asyncio.sleep(0.5)
    assert _child_writes(operator) == []


EXPECTED_KINDS = {
    "claudeproxy-apikey.yaml": {"ServiceAccount", "Deployment", "Service", "NetworkPolicy"},
    "claudeproxy-accesstoken.yaml": {"ServiceAccount", "Deployment", "Service"},
    "claudeproxy-oauth.yaml": {"ServiceAccount", "PersistentVolumeClaim", "Job", "CronJob", "Deployment", "Service"},
}


@pytest.mark.parametrize("path", crdtools.EXAMPLES, ids=lambda p: p.name)
async def test_each_example_produces_exactly_its_objects_all_valid(path: Path, api: Api, operator: Cluster) -> None:
    """`kubectl apply -f` of an example, with the operator running: the objects it creates, checked strictly against
    the Kubernetes API schemas (a seed Job's success is simulated so the oauth Deployment appears too)."""
    name = ""
    for doc in crdtools.load_all(path):
        if doc["kind"] == "Secret":  # the API server stores stringData as data
            doc = {**doc, "data": secret_data(doc.pop("stringData"))}
        res = {"Secret": SECRETS, "ClaudeProxy": CLAUDE_PROXIES}[doc["kind"]]
        await api.create(res, NS, doc)
        name = doc["metadata"]["name"] if doc["kind"] == "ClaudeProxy" else name
    if "oauth" in path.name:
        job = await _seed_job(api, name)
        await _finish_job(
            api, job["metadata"]["name"], name, "seed", _line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
        )
    await _exists(api, DEPLOYMENTS, name)
    await _status_is(api, name, "Seeded", ("True", "NotRequired" if "oauth" not in path.name else "Copied"))

    children = [
        obj.raw
        for (resource, ns, _), obj in operator.objects.items()
        if ns == NS and resource.plural in CHILD_KINDS and not obj.deleted
    ]
    assert {c["kind"] for c in children} == EXPECTED_KINDS[path.name]
    for child in children:
        kubernetes_validate.validate(child, K8S, strict=True)
        assert child["metadata"]["labels"][builders.INSTANCE_LABEL] == name


async def _login_story(api: Api, operator: Cluster, readyz: Readyz, *, events: bool) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, _proxy("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await _exists(api, DEPLOYMENTS, "p")
    waiting = await _status_is(api, "p", "LoginValid", ("Unknown", "ProxyNotAvailable"))
    assert readyz.hits == 0  # nothing to ask while no replica is available

    # A replica is up but has not called Anthropic yet.
    readyz.logins[NS, "p"] = {"state": "unknown"}
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    await _status_is(api, "p", "LoginValid", ("Unknown", "NoRequestYet"))
    await _status_is(api, "p", "Ready", ("True", "Ready"))

    # Anthropic refuses the key: the resync loop picks it up, without any event in the cluster.
    readyz.logins[NS, "p"] = {
        "state": "refused",
        "credential": "api_key",
        "status": 401,
        "message": "invalid x-api-key (Anthropic request-id: req_01)",
    }
    refused = await _status_is(api, "p", "LoginValid", ("False", "LoginRefused"))
    cond = next(c for c in refused["status"]["conditions"] if c["type"] == "LoginValid")
    assert "invalid x-api-key" in cond["message"] and "HTTP 401" in cond["message"]
    assert "Secret key" in cond["message"]  # what to do, and where
    assert _cond(refused, "Ready") == ("False", "LoginRefused")
    if events:
        warning = await _event(api, "Warning", "LoginRefused")
        assert "invalid x-api-key" in warning["message"]

    # Several passes over the same verdict: no new Event, no status write.
    writes = _status_writes(operator)
    await asyncio.sleep(1.5)
    assert _status_writes(operator) == writes
    if events:
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginRefused"]) == 1

    # A pod that has not called Anthropic yet answers next: the refusal stands.
    readyz.logins[NS, "p"] = {"state": "unknown"}
    await asyncio.sleep(1.0)
    assert _cond(await api.get(CLAUDE_PROXIES, NS, "p"), "LoginValid") == ("False", "LoginRefused")

    # A request succeeds again: the condition clears itself, once.
    readyz.logins[NS, "p"] = {"state": "valid", "credential": "api_key"}
    await _status_is(api, "p", "LoginValid", ("True", "LoginAccepted"))
    await _status_is(api, "p", "Ready", ("True", "Ready"))
    if events:
        await _event(api, "Normal", "LoginAccepted")
        await asyncio.sleep(1.0)
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginAccepted"]) == 1
        assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "LoginRefused"]) == 1

    # The proxy cannot be reached: Unknown, and no Event.
    del readyz.logins[NS, "p"]
    await _status_is(api, "p", "LoginValid", ("Unknown", "ProxyUnreachable"))
    assert waiting["status"]["authMode"] == "apiKey"


async def test_a_refused_login_shows_in_status_within_a_resync_and_clears(
    api: Api, operator: Cluster, readyz: Readyz
) -> None:
    await _login_story(api, operator, readyz, events=False)


async def test_a_refused_login_posts_one_event_per_transition(api: Api, operator: Cluster, readyz: Readyz) -> None:
    await _login_story(api, operator, readyz, events=True)


def test_every_rbac_rule_is_used_by_a_test_marked_so() -> None:
    """The rules grant nothing the operator does not need: the `uses_rbac` marks cover them all."""
    marked: set[tuple[str, str, str]] = set()
    for name, test in list(globals().items()):
        for mark in getattr(test, "pytestmark", ()) if name.startswith("test_") else ():
            if mark.name == "uses_rbac":
                marked |= set(mark.args[0])
    assert marked - rbac.permissions() == set()
    assert rbac.permissions() - marked == rbac.UNEXERCISED
