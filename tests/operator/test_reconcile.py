"""The operator end to end: kopf, the handlers and the reconciler against an in-process API server (kmock).

The tests play the user (kubectl apply/patch/delete) and the controllers a cluster would run (a Deployment becoming
available, a Job's pod terminating with its outcome line), and assert on the objects and the status the operator
leaves behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest

from claude_proxy_operator import builders
from claude_proxy_operator.handlers import CHILD_SELECTOR
from claude_proxy_operator.kube import (
    CLAUDE_PROXIES,
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    NETWORK_POLICIES,
    PVCS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
)
from tests.operator import crdtools
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.conftest import RESYNC_SECONDS
from tests.operator.reconcile_support import (
    CHILD_KINDS,
    CREDENTIALS,
    EVENTS,
    K8S,
    NS,
    OAUTH_SPEC,
    child_writes,
    condition_of,
    exists,
    finish_job,
    gone,
    outcome_line,
    pod_template,
    posted_event,
    proxy_body,
    rbac_rules,
    read_count,
    seed_job,
    status_is,
    status_write_count,
)

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's default finalizer name
NETWORK_POLICY_WRITES = rbac_rules("networking.k8s.io", "networkpolicies", "create delete patch")


async def _endpoint_is(api: Api, expected: str) -> bool:
    obj = await api.get(CLAUDE_PROXIES, NS, "p")
    return bool(obj and obj.get("status", {}).get("endpoint") == expected)


async def test_api_key_mode_creates_children_reports_status_and_converges(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    proxy = await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    uid = proxy["metadata"]["uid"]

    deploy = await exists(api, DEPLOYMENTS, "p")
    svc = await exists(api, SERVICES, "p")
    sa = await exists(api, SERVICE_ACCOUNTS, "p")
    for child in (deploy, svc, sa):
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [("ClaudeProxy", uid, True)]
        # written by server-side apply, as the operator's field manager
        assert {"manager": "claude-proxy-operator", "operation": "Apply"} in child["metadata"]["managedFields"]
    assert not any(r.method == kmock.method.POST and r.resource.plural in CHILD_KINDS for r in operator if r.resource)
    env = {e["name"]: e for e in pod_template(deploy)["spec"]["containers"][0]["env"]}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "key", "key": "api-key"}}
    assert await api.get(PVCS, NS, "p-credentials") is None
    assert await api.get(CRONJOBS, NS, "p-refresh") is None
    assert await exists(api, NETWORK_POLICIES, "p")  # on by default

    waiting = await status_is(api, "p", "Available", ("False", "NoReplicasAvailable"))
    assert waiting["status"]["endpoint"] == "http://p.rockbot.svc.cluster.local/v1"
    assert waiting["status"]["authMode"] == "apiKey"
    assert condition_of(waiting, "CredentialsReady") == ("True", "SecretsFound")
    assert condition_of(waiting, "Ready") == ("False", "NoReplicasAvailable")

    # The Deployment controller reports a replica available: the status follows without any resync.
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1, "readyReplicas": 1}}, "status")
    ready = await status_is(api, "p", "Ready", ("True", "Ready"))
    assert all(c["observedGeneration"] == 1 for c in ready["status"]["conditions"])

    # Converged: several resync passes later, nothing was written again, to a child or to the status; and each pass
    # read the Deployment once.
    writes, status_writes = child_writes(operator), status_write_count(operator)
    passes, deployment_reads = read_count(operator, CLAUDE_PROXIES), read_count(operator, DEPLOYMENTS)
    await asyncio.sleep(1.5)
    assert child_writes(operator) == writes
    assert status_write_count(operator) == status_writes
    passes, deployment_reads = (
        read_count(operator, CLAUDE_PROXIES) - passes,
        read_count(operator, DEPLOYMENTS) - deployment_reads,
    )
    assert passes >= 2 and deployment_reads <= passes + 1  # + 1: a pass cut in two by the window's end
    ready_event = await posted_event(api, "Normal", "Ready")
    assert ready_event["involvedObject"]["uid"] == uid
    assert ready_event["involvedObject"]["kind"] == "ClaudeProxy"
    assert ready_event["reportingComponent"] == ready_event["source"]["component"] == "claude-proxy-operator"
    await asyncio.sleep(0.5)
    assert len([e for e in await api.list(EVENTS, NS) if e["reason"] == "Ready"]) == 1


@pytest.mark.uses_rbac(NETWORK_POLICY_WRITES)
async def test_spec_update_patches_children_and_removes_what_was_turned_off(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await exists(api, DEPLOYMENTS, "p")
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
    pod = pod_template(deploy)["spec"]
    assert pod["nodeSelector"] == {"pool": "ai"}
    assert {"name": "PROXY_DEFAULT_MODEL", "value": "claude-x"} in pod["containers"][0]["env"]
    assert deploy["status"] == {"availableReplicas": 1}  # what others own is left alone
    await exists(api, NETWORK_POLICIES, "p")

    async def observed() -> dict[str, Any] | None:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return obj if obj and obj.get("status", {}).get("observedGeneration") == 2 else None

    st = await eventually(observed, what="observedGeneration 2")
    assert condition_of(st, "Ready") == ("True", "Ready")
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
        return deploy if deploy and "nodeSelector" not in pod_template(deploy)["spec"] else None

    deploy = await eventually(unpinned, what="nodeSelector removed")
    assert deploy["spec"]["replicas"] == 2
    await gone(api, NETWORK_POLICIES, "p")


async def test_changed_secret_content_rolls_the_proxy_out(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "token"}, "data": secret_data({"token": "test-token-1"})})
    await api.create(SECRETS, NS, {"metadata": {"name": "clients"}, "data": secret_data({"keys": "client-1"})})
    spec = {
        "auth": {"accessToken": {"secretRef": {"name": "token"}}},
        "clientAuth": {"apiKeysSecretRef": {"name": "clients"}},
    }
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", spec))
    first = pod_template(await exists(api, DEPLOYMENTS, "p"))

    async def checksum_changed(previous: dict[str, Any]) -> dict[str, Any] | None:
        template = pod_template(await api.get(DEPLOYMENTS, NS, "p") or {})
        old = previous["metadata"]["annotations"][builders.CHECKSUM_ANNOTATION]
        return template if template["metadata"]["annotations"][builders.CHECKSUM_ANNOTATION] != old else None

    await api.patch(SECRETS, NS, "token", {"data": secret_data({"token": "test-token-2"})})
    second = await eventually(lambda: checksum_changed(first), what="rollout after the token changed")
    assert second["spec"] == first["spec"]  # only the checksum moved: the env still points at the Secret
    await api.patch(SECRETS, NS, "clients", {"data": secret_data({"keys": "client-1,client-2"})})
    await eventually(lambda: checksum_changed(second), what="rollout after the client keys changed")


async def test_delete_cleans_up_but_keeps_a_retained_login(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {**OAUTH_SPEC, "networkPolicy": {"enabled": True}}))
    job = await seed_job(api, "p")
    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    await exists(api, DEPLOYMENTS, "p")
    await exists(api, NETWORK_POLICIES, "p")

    await api.delete(CLAUDE_PROXIES, NS, "p")
    for res, name in [(DEPLOYMENTS, "p"), (SERVICES, "p"), (SERVICE_ACCOUNTS, "p"), (NETWORK_POLICIES, "p"),
                      (CRONJOBS, "p-refresh"), (JOBS, job["metadata"]["name"])]:  # fmt: skip
        await gone(api, res, name)
    assert await api.get(PVCS, NS, "p-credentials") is not None
    await gone(api, CLAUDE_PROXIES, "p")  # no finalizer holds it

    # A new resource of the same name adopts the kept volume; its seed Job is the same (same volume, same Secret)
    # and `claude-proxy seed` leaves the volume's newer credentials alone.
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    second = await seed_job(api, "p")
    assert second["metadata"]["name"] == job["metadata"]["name"]


async def test_a_proxy_carries_no_finalizer_so_deleting_it_never_waits_for_the_operator(
    api: Api, operator: Cluster
) -> None:
    # As an older operator left it: kopf's finalizer, which holds a deletion until an operator removes it. With the
    # operator uninstalled first (helm uninstall), the resource would stay Terminating for good.
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    body = proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}})
    body["metadata"]["finalizers"] = [KOPF_FINALIZER]
    await api.create(CLAUDE_PROXIES, NS, body)
    await exists(api, DEPLOYMENTS, "p")

    async def released() -> bool:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return bool(obj) and not (obj or {}).get("metadata", {}).get("finalizers")

    await eventually(released, what="the old finalizer removed")
    await asyncio.sleep(3 * RESYNC_SECONDS)  # resync passes do not add one back
    assert await released()
    await api.delete(CLAUDE_PROXIES, NS, "p")
    assert await api.get(CLAUDE_PROXIES, NS, "p") is None  # gone at once, children by their ownerReferences
    await gone(api, DEPLOYMENTS, "p")


async def test_children_are_watched_through_a_server_side_selector(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "test-key-1"})})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}))
    await exists(api, DEPLOYMENTS, "p")
    selectors: dict[str, set[str | None]] = {}
    for r in operator:
        if r.resource is not None and r.params.get("watch") == "true":
            selectors.setdefault(str(r.resource.plural), set()).add(r.params.get("labelSelector"))
    assert selectors["deployments"] == {CHILD_SELECTOR}
    assert selectors["jobs"] == {CHILD_SELECTOR}
    assert selectors["claudeproxies"] == {None}  # every ClaudeProxy, whatever its labels


async def test_invalid_spec_is_reported_and_builds_nothing(api: Api, operator: Cluster) -> None:
    both = {"auth": {"apiKey": {"secretRef": {"name": "k"}}, "accessToken": {"secretRef": {"name": "t"}}}}
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", both))
    st = await status_is(api, "p", "Ready", ("False", "InvalidSpec"))
    assert "exactly one" in next(c for c in st["status"]["conditions"] if c["type"] == "Ready")["message"]
    await asyncio.sleep(0.5)
    assert child_writes(operator) == []


EXPECTED_KINDS = {
    "claudeproxy-apikey.yaml": {"ServiceAccount", "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"},
    "claudeproxy-accesstoken.yaml": {"ServiceAccount", "Deployment", "Service", "NetworkPolicy"},
    "claudeproxy-oauth.yaml": {
        "ServiceAccount", "PersistentVolumeClaim", "Job", "CronJob", "Deployment", "Service", "NetworkPolicy",
    },
}  # fmt: skip


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
        job = await seed_job(api, name)
        await finish_job(
            api, job["metadata"]["name"], name, "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
        )
    await exists(api, DEPLOYMENTS, name)
    await status_is(api, name, "Seeded", ("True", "NotRequired" if "oauth" not in path.name else "Copied"))

    children = [
        obj.raw
        for (resource, ns, _), obj in operator.objects.items()
        if ns == NS and resource.plural in CHILD_KINDS and not obj.deleted
    ]
    assert {c["kind"] for c in children} == EXPECTED_KINDS[path.name]
    for child in children:
        kubernetes_validate.validate(child, K8S, strict=True)
        assert child["metadata"]["labels"][builders.INSTANCE_LABEL] == name
