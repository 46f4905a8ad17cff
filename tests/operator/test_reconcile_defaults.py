"""Safe defaults: every instance gets a NetworkPolicy over all its pods (the seed and refresh pods hold the refresh
token) with egress only to DNS and HTTPS, and a PodDisruptionBudget once it runs more than one replica (in-process
API server)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from claude_proxy_operator import builders
from claude_proxy_operator.kube import CLAUDE_PROXIES, CRONJOBS, DEPLOYMENTS, NETWORK_POLICIES, PDBS, SECRETS
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    K8S,
    NS,
    OAUTH_SPEC,
    exists,
    gone,
    proxy_body,
    rbac_rules,
    seed_job,
)

PDB_WRITES = rbac_rules("policy", "poddisruptionbudgets", "create delete get patch")


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    return all(labels.get(key) == value for key, value in wanted.items())


async def test_a_network_policy_covers_every_pod_of_an_instance_by_default(api: Api, operator: Cluster) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))  # networkPolicy not mentioned
    policy = await exists(api, NETWORK_POLICIES, "p")
    kubernetes_validate.validate(policy, K8S, strict=False)

    job = await seed_job(api, "p")
    seed_pod = job["spec"]["template"]["metadata"]["labels"]
    cron = await exists(api, CRONJOBS, "p-refresh")
    refresh_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    for labels in (seed_pod, refresh_pod):
        assert _selects(policy, labels), labels  # the pods that hold the refresh token
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]  # the namespace, unless allowFrom says
    egress = [port for rule in policy["spec"]["egress"] for port in rule["ports"]]
    assert sorted((p["protocol"], p["port"]) for p in egress) == [("TCP", 53), ("TCP", 443), ("UDP", 53)]


@pytest.mark.uses_rbac(PDB_WRITES)
async def test_more_than_one_replica_gets_a_disruption_budget(api: Api, operator: Cluster) -> None:
    await api.create(SECRETS, NS, {"metadata": {"name": "key"}, "data": secret_data({"api-key": "k"})})
    spec = {"auth": {"apiKey": {"secretRef": {"name": "key"}}}, "replicas": 1}
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", spec))
    await exists(api, DEPLOYMENTS, "p")
    assert await api.get(PDBS, NS, "p") is None  # one replica: a budget would only block node drains

    await api.patch(CLAUDE_PROXIES, NS, "p", {"spec": {"replicas": 3}})
    pdb = await exists(api, PDBS, "p")
    kubernetes_validate.validate(pdb, K8S, strict=True)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == builders.selector("p", "proxy")
    assert [ref["kind"] for ref in pdb["metadata"]["ownerReferences"]] == ["ClaudeProxy"]

    await api.patch(CLAUDE_PROXIES, NS, "p", {"spec": {"replicas": 1}})
    await gone(api, PDBS, "p")

    async def one_replica() -> bool:
        deploy = await api.get(DEPLOYMENTS, NS, "p")
        return bool(deploy and deploy["spec"]["replicas"] == 1)

    await eventually(one_replica, what="replicas 1")
