"""The in-process cluster as the operator tests drive it: ClaudeProxy bodies, waits on objects, conditions and Events,
counts of the operator's requests, and the Job controller and kubelet's part in seed and refresh runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import kmock
import kubernetes_validate

from claude_proxy_operator import builders
from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, JOBS, PODS, SECRETS, Resource
from tests.operator.cluster import Api, Cluster, eventually, secret_data

if TYPE_CHECKING:
    from tests.operator.conftest import Readyz

NS = "rockbot"
K8S = kubernetes_validate.latest_version()
EVENTS = Resource("", "v1", "events", "Event")
CHILD_KINDS = {"serviceaccounts", "services", "deployments", "persistentvolumeclaims", "jobs", "cronjobs",
               "networkpolicies", "poddisruptionbudgets"}  # fmt: skip


def rbac_rules(group: str, resources: str, verbs: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for resource in resources.split() for verb in verbs.split()}


OAUTH_SPEC = {"auth": {"oauth": {"seedSecretRef": {"name": "creds"}}}}
CREDENTIALS = '{"claudeAiOauth": {"accessToken": "placeholder", "refreshToken": "placeholder", "expiresAt": 1}}'


def proxy_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def condition_of(obj: dict[str, Any] | None, kind: str) -> tuple[str, str] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == kind:
            return c["status"], c["reason"]
    return None


async def status_is(api: Api, name: str, kind: str, expected: tuple[str, str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, name)
        return obj if condition_of(obj, kind) == expected else None

    return await eventually(probe, what=f"{kind}={expected}")


async def exists(api: Api, res: Resource, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await api.get(res, NS, name)

    return await eventually(probe, what=f"{res.kind} {name}")


async def gone(api: Api, res: Resource, name: str) -> bool:
    async def probe() -> bool:
        return await api.get(res, NS, name) is None

    return await eventually(probe, what=f"{res.kind} {name} deleted")


async def posted_event(api: Api, kind: str, reason: str) -> dict[str, Any]:
    """Events are posted by the reconciler from whichever pass writes the new status: wait for one."""

    async def probe() -> dict[str, Any] | None:
        found = [e for e in await api.list(EVENTS, NS) if (e["type"], e["reason"]) == (kind, reason)]
        return found[0] if found else None

    return await eventually(probe, what=f"{kind} Event {reason}")


def child_writes(cluster: Cluster) -> list[str]:
    return [
        f"{r.method} {r.url.path}"
        for r in cluster
        if r.resource is not None
        and r.resource.plural in CHILD_KINDS
        and r.method in (kmock.method.POST, kmock.method.PATCH, kmock.method.DELETE)
    ]


def seed_creates(cluster: Cluster) -> list[str]:
    """Seed Jobs created (by the server-side apply that found no Job of that name)."""
    return [
        str(r.name)
        for r in cluster
        if r.id in cluster.apply_created
        and r.resource == kmock.resource("batch/v1/jobs")
        and str(r.name).startswith("p-seed-")
    ]


def read_count(cluster: Cluster, res: Resource, name: str = "p") -> int:
    """GETs of one object by name, e.g. one ClaudeProxy read per reconcile pass."""
    return sum(1 for r in cluster if r.method == kmock.method.GET and r.name == name and not r.subresource
               and r.resource is not None and r.resource.plural == res.plural)  # fmt: skip


def status_write_count(cluster: Cluster) -> int:
    return sum(1 for r in cluster if r.method == kmock.method.PATCH and r.subresource == "status" and r.resource
               and r.resource.plural == "claudeproxies")  # fmt: skip


def pod_template(deploy: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = deploy["spec"]["template"]
    return template


_clock = iter(range(10_000))


def _finished_at() -> str:
    """Strictly increasing finish times, one second apart, as pods finishing one after another would report."""
    n = next(_clock)
    return f"2030-01-01T00:{n // 60:02d}:{n % 60:02d}Z"


def outcome_line(command: str, result: str, reason: str, expires: str | None = None) -> str:
    message = {"copied": "credentials copied", "failed": f"{command} failed", "refreshed": "token refreshed"}
    payload = {"command": command, "result": result, "reason": reason, "message": message.get(result, result),
               "expiresAt": expires}  # fmt: skip
    return json.dumps(payload) + "\n"


async def finish_job(api: Api, job: str, instance: str, component: str, line: str) -> None:
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


async def cron_runs(api: Api, instance: str, run: int, line: str) -> None:
    """The CronJob controller starts a refresh Job, and its pod finishes with `line`."""
    job = f"{instance}-refresh-{run}"
    await api.create(JOBS, NS, {"metadata": {"name": job, "labels": builders.labels(instance, "refresh")}, "spec": {}})
    await finish_job(api, job, instance, "refresh", line)


async def seed_job(api: Api, instance: str, other_than: str | None = None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        jobs = [j for j in await api.list(JOBS, NS) if j["metadata"]["name"].startswith(f"{instance}-seed-")]
        fresh = [j for j in jobs if j["metadata"]["name"] != other_than]
        return fresh[0] if len(fresh) == 1 else None

    return await eventually(probe, what="one seed Job")


async def serving_oauth(api: Api, readyz: Readyz) -> None:
    """An oauth ClaudeProxy seeded with a login far from expiring, its Deployment available, `/readyz` saying the
    login is valid, and `Ready=True`."""
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    job = await seed_job(api, "p")
    line = outcome_line("seed", "copied", "forced", "2999-01-01T08:00:00Z")  # far from expiring
    await finish_job(api, job["metadata"]["name"], "p", "seed", line)
    await exists(api, DEPLOYMENTS, "p")
    readyz.logins[NS, "p"] = {"state": "valid", "credential": "oauth_file"}
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    await status_is(api, "p", "Ready", ("True", "Ready"))
