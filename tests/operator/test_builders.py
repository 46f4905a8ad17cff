"""Builders on plain dicts: every child valid for the Kubernetes API (strict schemas of the newest release that
kubernetes-validate ships, offline), secured, and shaped as each auth mode needs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from claude_proxy_operator import builders
from claude_proxy_operator.spec import ProxySpec, SpecError, parse_spec
from tests.operator import crdtools

K8S = kubernetes_validate.latest_version()
NS = "rockbot"
ROOT = Path(__file__).resolve().parents[2]
CHECKSUM = "0123456789abcdef"
DIGEST = "fedcba9876543210"


def _spec(raw: dict[str, Any]) -> ProxySpec:
    return parse_spec(raw, default_image="claude-code-proxy:test")


def _children(name: str, spec: ProxySpec) -> list[dict[str, Any]]:
    objs = [
        builders.service_account(name, NS),
        builders.deployment(name, NS, spec, CHECKSUM),
        builders.service(name, NS, spec),
        builders.network_policy(name, NS, spec),
    ]
    if spec.oauth is not None:
        objs += [
            builders.credentials_pvc(name, NS, spec),
            builders.seed_job(name, NS, spec, DIGEST),
            builders.refresh_cronjob(name, NS, spec),
            builders.refresh_now_job(name, NS, spec, DIGEST),
        ]
    return objs


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "Job"):
        return [obj["spec"]["template"]]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]]
    return []


EXAMPLES = {p["metadata"]["name"]: p for p in crdtools.example_proxies()}
RICH_OAUTH: dict[str, Any] = {
    "auth": {
        "oauth": {
            "seedSecretRef": {"name": "creds", "key": "credentials"},
            "tokenURL": "http://fake-oauth.test/v1/oauth/token",
            "storage": {"storageClassName": "standard", "retainOnDelete": False},
            "refresh": {"schedule": "0 * * * *", "before": 90, "suspend": True},
        }
    },
    "image": "registry.example/claude-proxy:1.2.3",
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "registry-example"}, {"name": "registry-mirror"}],
    "replicas": 3,
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["ai"]}]}]
            }
        }
    },
    "model": {"default": "claude-sonnet-4-6", "aliases": {"gpt-4o": "claude-sonnet-4-6"}, "defaultMaxTokens": 4096},
    "upstream": {"baseURL": "http://fake-anthropic.test"},
    "clientAuth": {"apiKeysSecretRef": {"name": "client-keys"}},
    "service": {"type": "LoadBalancer", "port": 8443},
    "logLevel": "debug",
}
CASES = {**{name: p["spec"] for name, p in EXAMPLES.items()}, "rich-oauth": RICH_OAUTH}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_child_is_valid_for_kubernetes(case: str) -> None:
    name = "a" * 40  # the longest name the CRD admits: derived names must still fit
    for obj in _children(name, _spec(CASES[case])):
        kubernetes_validate.validate(obj, K8S, strict=True)
        assert len(obj["metadata"]["name"]) <= (52 if obj["kind"] == "CronJob" else 63)
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())
        assert obj["metadata"]["namespace"] == NS


@pytest.mark.parametrize("case", sorted(CASES))
def test_pods_are_locked_down(case: str) -> None:
    for obj in _children("p", _spec(CASES[case])):
        for template in _pod_templates(obj):
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["fsGroup"] == 10001
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes["tmp"]
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 10001
                assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def _env(obj: dict[str, Any]) -> dict[str, Any]:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_api_key_mode_takes_the_key_from_the_secret_and_needs_no_volume() -> None:
    spec = _spec(EXAMPLES["claude-proxy"]["spec"])
    deploy = builders.deployment("p", NS, spec, CHECKSUM)
    env = _env(deploy)
    assert env["ANTHROPIC_API_KEY"] == {"secretKeyRef": {"name": "anthropic-api-key", "key": "api-key"}}
    assert env["PROXY_API_KEYS"] == {"secretKeyRef": {"name": "claude-proxy-client-keys", "key": "keys"}}
    assert env["PROXY_MODEL_ALIASES"] == "haiku=claude-haiku-4-5,sonnet=claude-sonnet-4-6"
    assert "CLAUDE_CREDENTIALS_PATH" not in env and "CLAUDE_ACCESS_TOKEN" not in env
    pod = deploy["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "affinity" not in pod
    assert deploy["spec"]["replicas"] == 2


def test_access_token_mode() -> None:
    spec = _spec(EXAMPLES["claude-proxy-token"]["spec"])
    env = _env(builders.deployment("p", NS, spec, CHECKSUM))
    assert env["CLAUDE_ACCESS_TOKEN"] == {"secretKeyRef": {"name": "claude-access-token", "key": "token"}}
    assert "ANTHROPIC_API_KEY" not in env and "CLAUDE_CREDENTIALS_PATH" not in env


def test_proxy_container_probes_port_and_rollout_checksum() -> None:
    spec = _spec(RICH_OAUTH)
    deploy = builders.deployment("p", NS, spec, CHECKSUM)
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["claude-proxy"] and container["args"] == ["serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["image"] == "registry.example/claude-proxy:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert deploy["spec"]["template"]["metadata"]["annotations"][builders.CHECKSUM_ANNOTATION] == CHECKSUM
    other = builders.deployment("p", NS, spec, "another")
    assert other["spec"]["template"] != deploy["spec"]["template"]
    assert builders.deployment("p", NS, spec, CHECKSUM) == deploy  # same input, same dict
    assert builders.SEED_DIGEST_ANNOTATION not in deploy["spec"]["template"]["metadata"]["annotations"]
    scrape = {k: v for k, v in deploy["spec"]["template"]["metadata"]["annotations"].items() if "prometheus" in k}
    assert scrape == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert int(scrape["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    seeded = builders.deployment("p", NS, spec, CHECKSUM, DIGEST)
    assert seeded["spec"]["template"]["metadata"]["annotations"][builders.SEED_DIGEST_ANNOTATION] == DIGEST
    env = _env(deploy)
    assert env["CLAUDE_CREDENTIALS_PATH"] == "/var/lib/claude-proxy/.credentials.json"
    assert env["ANTHROPIC_BASE_URL"] == "http://fake-anthropic.test"
    assert env["PROXY_DEFAULT_MAX_TOKENS"] == "4096" and env["LOG_LEVEL"] == "debug"


def test_oauth_volume_seed_and_refresh() -> None:
    spec = _spec(RICH_OAUTH)
    pvc = builders.credentials_pvc("p", NS, spec)
    assert pvc["metadata"]["name"] == "p-credentials"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["storageClassName"] == "standard"

    job = builders.seed_job("p", NS, spec, DIGEST)
    assert job["metadata"]["name"] == "p-seed-fedcba9876"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "seed", "--from", "/etc/claude-proxy/seed/.credentials.json", "--to", "/var/lib/claude-proxy/.credentials.json"
    ]  # fmt: skip
    assert {"name": "seed", "mountPath": "/etc/claude-proxy/seed", "readOnly": True} in container["volumeMounts"]
    seed_volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "seed")
    assert seed_volume["secret"]["secretName"] == "creds"
    assert seed_volume["secret"]["items"] == [{"key": "credentials", "path": ".credentials.json"}]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] > 0 and job["spec"]["activeDeadlineSeconds"] > 0

    cron = builders.refresh_cronjob("p", NS, spec)
    cspec = cron["spec"]
    assert cspec["schedule"] == "0 * * * *" and cspec["suspend"] is True
    assert cspec["concurrencyPolicy"] == "Forbid" and cspec["startingDeadlineSeconds"] > 0
    assert cspec["successfulJobsHistoryLimit"] > 0 and cspec["failedJobsHistoryLimit"] > 0
    jspec = cspec["jobTemplate"]["spec"]
    assert (
        0 < jspec["backoffLimit"] <= 3 and jspec["activeDeadlineSeconds"] > 0 and jspec["ttlSecondsAfterFinished"] > 0
    )
    args = jspec["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "refresh", "--credentials", "/var/lib/claude-proxy/.credentials.json", "--before", "90",
        "--token-url", "http://fake-oauth.test/v1/oauth/token",
    ]  # fmt: skip


def test_rwo_volume_co_locates_every_pod_that_mounts_it() -> None:
    spec = _spec(RICH_OAUTH)
    term = {
        "labelSelector": {"matchLabels": {builders.VOLUME_LABEL: "p-credentials"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    for obj in _children("p", spec):
        for template in _pod_templates(obj):
            assert template["metadata"]["labels"][builders.VOLUME_LABEL] == "p-credentials"
            affinity = template["spec"]["affinity"]
            assert affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [term]
            assert affinity["nodeAffinity"] == RICH_OAUTH["affinity"]["nodeAffinity"]  # the user's term is kept
            assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
            assert template["spec"]["tolerations"] == RICH_OAUTH["tolerations"]
    assert "podAffinity" not in RICH_OAUTH["affinity"]  # the input was not mutated


def test_image_pull_secrets_reach_every_pod_and_only_when_given() -> None:
    pods = [t["spec"] for obj in _children("p", _spec(RICH_OAUTH)) for t in _pod_templates(obj)]
    assert len(pods) == 4  # proxy, seed, refresh, refresh-now
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "registry-example"}, {"name": "registry-mirror"}]
    for case in EXAMPLES.values():
        for obj in _children("p", _spec(case["spec"])):
            for template in _pod_templates(obj):
                assert "imagePullSecrets" not in template["spec"]
    with pytest.raises(SpecError, match="imagePullSecrets"):
        _spec({**RICH_OAUTH, "imagePullSecrets": [{"key": "x"}]})


def test_rwx_volume_needs_no_co_location() -> None:
    raw = copy.deepcopy(RICH_OAUTH)
    raw["auth"]["oauth"]["storage"]["accessModes"] = ["ReadWriteMany"]
    raw.pop("affinity")
    for obj in _children("p", _spec(raw)):
        for template in _pod_templates(obj):
            assert "affinity" not in template["spec"]


def test_service_endpoint_and_network_policy() -> None:
    spec = _spec(RICH_OAUTH)
    svc = builders.service("p", NS, spec)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8443, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == builders.deployment("p", NS, spec, CHECKSUM)["spec"]["selector"]["matchLabels"]
    # Three replicas: a client stays on the pod that keeps the Responses items it was answered with.
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert svc["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 3600}}
    for replicas in (0, 1):
        single = builders.service("p", NS, _spec({**RICH_OAUTH, "replicas": replicas}))["spec"]
        assert "sessionAffinity" not in single and "sessionAffinityConfig" not in single
    assert builders.endpoint("p", NS, 8443) == "http://p.rockbot.svc.cluster.local:8443/v1"
    assert builders.endpoint("p", NS, 80, "corp.internal") == "http://p.rockbot.svc.corp.internal/v1"

    same_namespace = builders.network_policy("p", NS, _spec({**RICH_OAUTH, "networkPolicy": {"enabled": True}}))
    assert same_namespace["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    ]
    listed = builders.network_policy("p", NS, _spec(EXAMPLES["claude-proxy"]["spec"]))
    assert listed["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rockbot"}}}
    ]
    assert listed["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_the_network_policy_admits_the_operator_to_read_readyz() -> None:
    spec = _spec(EXAMPLES["claude-proxy"]["spec"])
    policy = builders.network_policy("p", NS, spec, "claude-proxy-system")
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "claude-proxy-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "claude-proxy-operator"}},
    }
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rockbot"}}},
        operator_peer,
    ]
    # The peer's labels are the ones the chart puts on the operator's pods.
    chart = (ROOT / "charts" / "claude-code-proxy" / "templates" / "_helpers.tpl").read_text()
    assert "app.kubernetes.io/name: claude-proxy-operator" in chart
    rendered = (ROOT / "manifests" / "operator" / "20-deployment.yaml").read_text()
    assert "POD_NAMESPACE" in rendered and "fieldPath: metadata.namespace" in rendered


def test_every_proxy_deployment_listens_on_every_interface_explicitly() -> None:
    """The proxy's own default is the loopback: the pods must say 0.0.0.0, or the Service would reach nothing."""
    for name, example in EXAMPLES.items():
        env = _env(builders.deployment(name, NS, _spec(example["spec"]), CHECKSUM))
        assert (env["HOST"], env["PORT"]) == ("0.0.0.0", str(builders.PROXY_PORT)), name


def test_the_network_policy_lets_out_only_dns_https_and_the_overridden_endpoints() -> None:
    oauth = {"seedSecretRef": {"name": "creds"}, "tokenURL": "http://fake-upstream.test:8081/v1/oauth/token"}
    spec = _spec({"auth": {"oauth": oauth}, "upstream": {"baseURL": "http://fake-upstream.test:8080"}})
    policy = builders.network_policy("p", NS, spec)
    assert policy["spec"]["podSelector"]["matchLabels"] == builders.instance_selector("p")
    for component in ("proxy", "seed", "refresh"):  # every pod of the instance
        labels = builders.labels("p", component)
        assert all(labels[k] == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    ports = sorted((p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("TCP", 8080), ("TCP", 8081), ("UDP", 53)]
    assert all("to" not in rule for rule in policy["spec"]["egress"])  # any address, on those ports only
    plain = _spec({"auth": {"apiKey": {"secretRef": {"name": "k"}}}, "upstream": {"baseURL": "http://gw.corp"}})
    assert builders.egress_ports(plain) == [80, 443]
