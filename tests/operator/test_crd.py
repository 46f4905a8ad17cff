"""The CRD file: valid for the API server, structural, its CEL rules doing what they promise, and the examples
accepted by it; the operator's own defaults are the CRD's defaults."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from claude_proxy_operator.spec import parse_spec
from tests.operator import crdtools

K8S = kubernetes_validate.latest_version()


def test_crd_is_valid_for_the_kubernetes_api() -> None:
    kubernetes_validate.validate(crdtools.crd(), K8S, strict=True)


def test_crd_identity_and_status_subresource() -> None:
    spec = crdtools.crd()["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"], spec["scope"]) == (
        "claudeproxy.dev",
        "ClaudeProxy",
        "claudeproxies",
        "Namespaced",
    )
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Auth", "Ready", "Login", "Token expires", "Endpoint", "Age"]


def _structural_problems(node: Any, path: str = "") -> list[str]:
    """Every node must say its type (or be an int-or-string / preserved-unknown object): a structural schema."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if not typed:
        problems.append(path or "<root>")
    for key, sub in (node.get("properties") or {}).items():
        problems += _structural_problems(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _structural_problems(node[key], f"{path}.{key}")
    return problems


def test_schema_is_structural() -> None:
    assert _structural_problems(crdtools.schema()) == []


@pytest.mark.parametrize("rule", crdtools.all_rules())
def test_every_cel_rule_compiles(rule: str) -> None:
    crdtools._program(rule)


@pytest.mark.parametrize("proxy", crdtools.example_proxies(), ids=lambda p: p["metadata"]["name"])
def test_examples_are_accepted(proxy: dict[str, Any]) -> None:
    assert crdtools.validate(proxy) == []


@pytest.mark.parametrize("path", crdtools.EXAMPLES, ids=lambda p: p.name)
def test_example_secrets_are_valid_and_placeholders(path: Any) -> None:
    docs = crdtools.load_all(path)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert secrets, "each example ships the Secrets it references"
    for secret in secrets:
        kubernetes_validate.validate(secret, K8S, strict=True)
        for value in secret["stringData"].values():
            assert "replace" in value and "sk-ant-" not in value
    proxy = next(d for d in docs if d["kind"] == "ClaudeProxy")
    names = {s["metadata"]["name"] for s in secrets}
    auth = proxy["spec"]["auth"]
    referenced = {ref["name"] for mode in auth.values() for key, ref in mode.items() if key.endswith("ecretRef")}
    referenced |= {r["name"] for r in proxy["spec"].get("clientAuth", {}).values()}
    assert referenced == names


def _proxy(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "claudeproxy.dev/v1alpha1", "kind": "ClaudeProxy", "metadata": {"name": name}, "spec": spec}


OAUTH = {"auth": {"oauth": {"seedSecretRef": {"name": "creds"}}}}
APIKEY = {"auth": {"apiKey": {"secretRef": {"name": "key"}}}}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"auth": {}}, "== 1"),
        ({"auth": {**APIKEY["auth"], **OAUTH["auth"]}}, "== 1"),
        ({"auth": {"apiKey": {"secretRef": {"name": "k"}}, "accessToken": {"secretRef": {"name": "t"}}}}, "== 1"),
        ({**APIKEY, "networkPolicy": {"enabled": False, "allowFrom": [{"podSelector": {}}]}}, "self.enabled"),
        ({**APIKEY, "networkPolicy": {"enabled": True, "allowFrom": [{}]}}, "namespaceSelector"),
        ({**APIKEY, "model": {"aliases": {"a,b": "claude-x"}}}, "contains"),
        ({**APIKEY, "model": {"aliases": {"fast": "claude=x"}}}, "contains"),
        ({**APIKEY, "upstream": {"baseURL": "ftp://gateway"}}, "https?"),
        ({"auth": {"oauth": {"seedSecretRef": {"name": "c"}, "tokenURL": "localhost/token"}}}, "https?"),
    ],
)
def test_cel_rules_refuse_what_cannot_be_combined(spec: dict[str, Any], fragment: str) -> None:
    errors = crdtools.validate(_proxy(spec))
    assert any(fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "auth"),
        ({"auth": {"apiKey": {}}}, "secretRef"),
        ({"auth": {"oauth": {"seedSecretRef": {"name": "c"}, "storage": {"accessModes": ["ReadWriteOncePod"]}}}}, ""),
        ({**APIKEY, "replicas": 21}, "replicas"),
        ({**APIKEY, "service": {"type": "ExternalName"}}, "service"),
        ({"auth": {"oauth": {"seedSecretRef": {"name": "c"}, "storage": {"size": "lots"}}}}, "size"),
        ({**APIKEY, "imagePullSecrets": [{}]}, "name"),
        ({**APIKEY, "imagePullSecrets": [{"name": f"s{n}"} for n in range(17)]}, "imagePullSecrets"),
    ],
)
def test_openapi_schema_refuses_bad_values(spec: dict[str, Any], field: str) -> None:
    errors = crdtools.validate(_proxy(spec))
    assert errors and any(field in e for e in errors), errors


def test_name_length_rule() -> None:
    assert crdtools.validate(_proxy(APIKEY, name="a" * 40)) == []
    assert crdtools.validate(_proxy(APIKEY, name="a" * 41))


def test_storage_class_and_access_modes_are_immutable() -> None:
    old = _proxy({"auth": {"oauth": {"seedSecretRef": {"name": "c"}, "storage": {"storageClassName": "fast"}}}})
    same = copy.deepcopy(old)
    same["spec"]["auth"]["oauth"]["storage"]["size"] = "1Gi"
    assert crdtools.validate(same, old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["auth"]["oauth"]["storage"]["storageClassName"] = "slow"
    assert any("oldSelf" in e for e in crdtools.validate(changed, old))
    rwx = copy.deepcopy(old)
    rwx["spec"]["auth"]["oauth"]["storage"]["accessModes"] = ["ReadWriteMany"]
    assert any("oldSelf" in e for e in crdtools.validate(rwx, old))


MINIMAL_SPECS = [
    APIKEY,
    {"auth": {"accessToken": {"secretRef": {"name": "t"}}}},
    OAUTH,
    {**OAUTH, "clientAuth": {"apiKeysSecretRef": {"name": "k"}}, "networkPolicy": {"enabled": True}},
]


@pytest.mark.parametrize("raw", MINIMAL_SPECS + [p["spec"] for p in crdtools.example_proxies()])
def test_operator_defaults_equal_crd_defaults(raw: dict[str, Any]) -> None:
    defaulted = crdtools.apply_defaults(crdtools.schema()["properties"]["spec"], raw)
    assert parse_spec(raw, default_image="img") == parse_spec(defaulted, default_image="img")


def test_defaulting_fills_the_nested_oauth_objects() -> None:
    defaulted = crdtools.apply_defaults(crdtools.schema()["properties"]["spec"], OAUTH)
    oauth = defaulted["auth"]["oauth"]
    assert oauth["seedSecretRef"] == {"name": "creds", "key": ".credentials.json"}
    assert oauth["storage"] == {"size": "64Mi", "accessModes": ["ReadWriteOnce"], "retainOnDelete": True}
    assert oauth["refresh"] == {"schedule": "*/30 * * * *", "before": 60, "suspend": False}
    assert defaulted["service"] == {"type": "ClusterIP", "port": 80}
