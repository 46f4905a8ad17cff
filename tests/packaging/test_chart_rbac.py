"""Who may do what: the chart lends ClaudeProxy rights to the default view and edit/admin roles (aggregation), and
lets the cluster admin say which images a ClaudeProxy may run."""

from __future__ import annotations

from typing import Any

from claude_proxy_operator import config as operator_config
from tests.packaging.chart_support import aggregated, operator_container, validate_k8s
from tests.packaging.helm import of_kind, template

LABEL = "rbac.authorization.k8s.io/aggregate-to-"


def _aggregated(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        label.removeprefix(LABEL): role
        for role in of_kind(objects, "ClusterRole")
        if aggregated(role)
        for label, value in role["metadata"]["labels"].items()
        if label.startswith(LABEL) and value == "true"
    }


def _verbs(role: dict[str, Any], resource: str) -> set[str]:
    return {
        verb
        for rule in role["rules"]
        if rule["apiGroups"] == ["claudeproxy.dev"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_namespace_users_get_claudeproxy_rights_through_the_default_roles() -> None:
    for values in ({}, {"operator.watchNamespaces": "{team}"}):
        objects = template(values)
        validate_k8s(objects)
        roles = _aggregated(objects)
        assert set(roles) == {"view", "edit", "admin"}
        assert _verbs(roles["view"], "claudeproxies") == {"get", "list", "watch"}
        assert _verbs(roles["view"], "claudeproxies/status") == {"get", "list", "watch"}
        writes = {"create", "delete", "deletecollection", "patch", "update"}
        assert _verbs(roles["edit"], "claudeproxies") == writes | {"get", "list", "watch"}
        assert roles["edit"] is roles["admin"]
        assert "patch" not in _verbs(roles["edit"], "claudeproxies/status")  # status is the operator's


def test_the_aggregation_can_be_left_out() -> None:
    assert _aggregated(template({"rbac.aggregateToDefaultRoles": "false"})) == {}


def _config(values: dict[str, str]) -> operator_config.Config:
    env = {e["name"]: e.get("value", "") for e in operator_container(template(values))["env"]}
    return operator_config.Config.from_env(env)


def test_by_default_a_claudeproxy_may_run_only_the_charts_proxy_image() -> None:
    config = _config({"proxy.image.repository": "registry.example/ops/proxy"})
    assert config.allowed_images == ()
    assert config.image_allowed("registry.example/ops/proxy:9.9.9")
    assert not config.image_allowed("docker.io/library/busybox:latest")


def test_the_admin_names_the_allowed_images() -> None:
    config = _config({"operator.allowedImages": "{mirror.local/ccp/claude-code-proxy,ghcr.io/acme/*}"})
    assert config.allowed_images == ("mirror.local/ccp/claude-code-proxy", "ghcr.io/acme/*")
    assert config.image_allowed("ghcr.io/acme/proxy:1")
    assert not config.image_allowed("claude-code-proxy:0.1.0")
