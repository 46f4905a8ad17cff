"""The operator is a careful deputy: it never writes over an object a ClaudeProxy does not own (a name taken is a
condition and an Event), and runs only the images the cluster admin allows (in-process API server)."""

from __future__ import annotations

import asyncio

import kmock

from claude_proxy_operator import builders
from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, SECRETS, SERVICE_ACCOUNTS, SERVICES
from tests.operator.cluster import Api, Cluster, secret_data
from tests.operator.reconcile_support import NS, exists, posted_event, proxy_body, status_is

API_KEY_SPEC = {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}


async def _key(api: Api) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "k"})})


def _writes_to(cluster: Cluster, plural: str, name: str) -> list[str]:
    return [
        f"{r.method} {r.url.path}"
        for r in cluster
        if r.resource is not None
        and r.resource.plural == plural
        and r.name == name
        and r.method in (kmock.method.POST, kmock.method.PATCH, kmock.method.PUT, kmock.method.DELETE)
    ]


async def test_a_proxy_named_like_a_foreign_service_leaves_it_alone(api: Api, operator: Cluster) -> None:
    await _key(api)
    # Someone else's Service, even one wearing this operator's labels: no ownerReference to the ClaudeProxy.
    foreign = {
        "metadata": {"name": "p", "labels": builders.labels("p", "proxy")},
        "spec": {"selector": {"app": "billing"}, "ports": [{"port": 443, "targetPort": 8443}]},
    }
    await api.create(SERVICES, NS, foreign)
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", API_KEY_SPEC))

    blocked = await status_is(api, "p", "Ready", ("False", "NameConflict"))
    ready = next(c for c in blocked["status"]["conditions"] if c["type"] == "Ready")
    assert f"Service {NS}/p" in ready["message"]
    event = await posted_event(api, "Warning", "NameConflict")
    assert f"Service {NS}/p" in event["message"]
    await asyncio.sleep(1.0)  # several resyncs
    service = await api.get(SERVICES, NS, "p")
    assert service is not None and service["spec"]["selector"] == {"app": "billing"}
    assert _writes_to(operator, "services", "p") == []
    assert await api.get(DEPLOYMENTS, NS, "p") is None  # nothing of the proxy's is made beside it
    assert await api.get(SERVICE_ACCOUNTS, NS, "p") is None

    # The name is freed: the proxy gets its children.
    await api.delete(SERVICES, NS, "p")
    await exists(api, DEPLOYMENTS, "p")
    mine = await exists(api, SERVICES, "p")
    assert [ref["kind"] for ref in mine["metadata"]["ownerReferences"]] == ["ClaudeProxy"]


async def test_a_foreign_service_account_is_not_taken_over(api: Api, operator: Cluster) -> None:
    await _key(api)
    await api.create(SERVICE_ACCOUNTS, NS, {"metadata": {"name": "p"}, "automountServiceAccountToken": True})
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", API_KEY_SPEC))
    await status_is(api, "p", "Ready", ("False", "NameConflict"))
    account = await api.get(SERVICE_ACCOUNTS, NS, "p")
    assert account is not None and account["automountServiceAccountToken"] is True
    assert _writes_to(operator, "serviceaccounts", "p") == []


async def test_an_image_the_admin_does_not_allow_is_not_run(api: Api, operator: Cluster) -> None:
    await _key(api)
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", {**API_KEY_SPEC, "image": "attacker.example/miner:1"}))
    blocked = await status_is(api, "p", "Ready", ("False", "ImageNotAllowed"))
    ready = next(c for c in blocked["status"]["conditions"] if c["type"] == "Ready")
    assert "attacker.example/miner:1" in ready["message"] and "claude-code-proxy" in ready["message"]
    await posted_event(api, "Warning", "ImageNotAllowed")
    await asyncio.sleep(1.0)
    assert await api.get(DEPLOYMENTS, NS, "p") is None

    # Another tag of the allowed repository is fine.
    await api.patch(CLAUDE_PROXIES, NS, "p", {"spec": {"image": "claude-code-proxy:0.2.0"}})
    deploy = await exists(api, DEPLOYMENTS, "p")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "claude-code-proxy:0.2.0"
    await status_is(api, "p", "Ready", ("False", "NoReplicasAvailable"))  # no longer blocked: waiting for pods
