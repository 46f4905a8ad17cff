"""The Helm chart's instance: the ClaudeProxy it renders for each auth mode (valid for the CRD), every value reaching
its spec, image pull secrets, and the namespaces it may go to."""

from __future__ import annotations

import pytest

from claude_proxy_operator import builders
from claude_proxy_operator.spec import parse_spec
from tests.operator import crdtools
from tests.packaging import helm
from tests.packaging.chart_support import MODES, instance, validate_k8s
from tests.packaging.helm import NAMESPACE, of_kind, one, template


@pytest.mark.parametrize("mode", MODES)
def test_instance_per_auth_mode_is_valid(mode: str) -> None:
    objects = template(instance(mode))
    validate_k8s(objects)
    proxy = one(objects, "ClaudeProxy")
    assert proxy["metadata"]["namespace"] == NAMESPACE
    assert crdtools.validate(proxy) == []
    assert list(proxy["spec"]["auth"]) == [mode]
    spec = parse_spec(proxy["spec"], default_image="img")  # the operator takes it as it is
    assert spec.auth_mode == mode and spec.image == "img"
    refs = {
        "apiKey": ("anthropic-api-key", "api-key"),
        "accessToken": ("claude-access-token", "token"),
        "oauth": ("claude-credentials", ".credentials.json"),
    }
    seed = spec.oauth.seed if spec.oauth else None
    by_mode = {"apiKey": spec.api_key, "accessToken": spec.access_token, "oauth": seed}
    ref = by_mode[mode]
    assert ref is not None and (ref.name, ref.key) == refs[mode]


def test_the_instance_is_behind_a_network_policy_unless_switched_off() -> None:
    proxy = one(template(instance("oauth")), "ClaudeProxy")
    assert proxy["spec"]["networkPolicy"] == {"enabled": True}
    assert parse_spec(proxy["spec"], default_image="img").network_policy
    off = one(template(instance("oauth", **{"instance.networkPolicy.enabled": "false"})), "ClaudeProxy")
    assert off["spec"]["networkPolicy"] == {"enabled": False}
    assert crdtools.validate(off) == []
    assert not parse_spec(off["spec"], default_image="img").network_policy
    # A resource that does not mention it gets one too (the CRD's default, and the operator's).
    assert parse_spec({"auth": {"apiKey": {"secretRef": {"name": "k"}}}}, default_image="img").network_policy


def test_instance_disabled_by_default() -> None:
    assert of_kind(template(), "ClaudeProxy") == []


ORIGINAL_ENDPOINT = "http://claude-code-proxy.rockbot.svc.cluster.local/v1"  # the original proxy's README


def test_the_default_instance_has_the_original_proxys_service_name() -> None:
    proxy = one(template(instance("apiKey"), namespace="rockbot"), "ClaudeProxy")
    name = proxy["metadata"]["name"]
    assert name == "claude-code-proxy"
    spec = parse_spec(proxy["spec"], default_image="img")
    service = builders.service(name, "rockbot", spec)  # the Service the operator makes of it
    assert service["metadata"]["name"] == "claude-code-proxy"
    assert builders.endpoint(name, "rockbot", spec.service_port) == ORIGINAL_ENDPOINT


def test_an_install_of_the_earlier_default_name_keeps_it_by_value() -> None:
    proxy = one(template(instance("oauth", **{"instance.name": "claude-proxy"})), "ClaudeProxy")
    assert proxy["metadata"]["name"] == "claude-proxy"


FULL = {
    "instance.name": "rockbot-llm",
    "instance.auth.oauth.tokenURL": "http://oauth.test.svc:8081/v1/oauth/token",
    "instance.auth.oauth.storage.size": "128Mi",
    "instance.auth.oauth.storage.storageClassName": "fast",
    "instance.auth.oauth.storage.accessMode": "ReadWriteMany",
    "instance.auth.oauth.storage.retainOnDelete": "false",
    "instance.auth.oauth.refresh.schedule": "*/10 * * * *",
    "instance.auth.oauth.refresh.before": "90",
    "instance.auth.oauth.refresh.suspend": "true",
    "instance.clientAuth.secretName": "llm-client-keys",
    "instance.model.default": "claude-sonnet-4-6",
    "instance.model.aliases.gpt-4o": "claude-sonnet-4-6",
    "instance.model.defaultMaxTokens": "4096",
    "instance.image": "registry.example/proxy:9",
    "instance.replicas": "2",
    "instance.logLevel": "debug",
    "instance.upstreamBaseURL": "http://fake-anthropic.test.svc:8080",
    "instance.service.port": "8080",
    "instance.networkPolicy.enabled": "true",
    "instance.networkPolicy.allowFrom[0].podSelector.matchLabels.app": "rockbot",
    "instance.resources.requests.cpu": "100m",
    "instance.nodeSelector.pool": "llm",
    "instance.tolerations[0].key": "dedicated",
    "instance.tolerations[0].operator": "Exists",
}


def test_every_instance_value_reaches_the_spec() -> None:
    objects = template(instance("oauth", **FULL))
    validate_k8s(objects)
    proxy = one(objects, "ClaudeProxy")
    assert crdtools.validate(proxy) == []
    spec = parse_spec(proxy["spec"], default_image="unused")
    assert proxy["metadata"]["name"] == "rockbot-llm"
    assert spec.oauth is not None
    assert spec.oauth.token_url == FULL["instance.auth.oauth.tokenURL"]
    storage = proxy["spec"]["auth"]["oauth"]["storage"]
    assert storage == {
        "size": "128Mi",
        "storageClassName": "fast",
        "accessModes": ["ReadWriteMany"],
        "retainOnDelete": False,
    }
    assert proxy["spec"]["auth"]["oauth"]["refresh"] == {"schedule": "*/10 * * * *", "before": 90, "suspend": True}
    assert spec.client_keys is not None and (spec.client_keys.name, spec.client_keys.key) == ("llm-client-keys", "keys")
    assert (spec.default_model, dict(spec.model_aliases), spec.default_max_tokens) == (
        "claude-sonnet-4-6",
        {"gpt-4o": "claude-sonnet-4-6"},
        4096,
    )
    assert (spec.image, spec.replicas, spec.log_level) == ("registry.example/proxy:9", 2, "debug")
    assert spec.base_url == "http://fake-anthropic.test.svc:8080"
    assert (spec.service_type, spec.service_port) == ("ClusterIP", 8080)
    assert spec.network_policy and list(spec.allow_from) == [{"podSelector": {"matchLabels": {"app": "rockbot"}}}]
    assert dict(spec.resources) == {"requests": {"cpu": "100m"}}
    assert dict(spec.node_selector) == {"pool": "llm"}
    assert list(spec.tolerations) == [{"key": "dedicated", "operator": "Exists"}]


def test_image_pull_secrets_reach_the_operator_and_every_proxy_pod() -> None:
    shared = {"operator.imagePullSecrets[0].name": "registry-example"}
    objects = template(instance("oauth", **shared))
    validate_k8s(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry-example"}]
    proxy = one(objects, "ClaudeProxy")
    assert crdtools.validate(proxy) == []
    assert proxy["spec"]["imagePullSecrets"] == [{"name": "registry-example"}]  # one registry: the operator's
    spec = parse_spec(proxy["spec"], default_image="img")
    pods = [
        builders.deployment("p", NAMESPACE, spec, "0")["spec"]["template"]["spec"],
        builders.seed_job("p", NAMESPACE, spec, "0" * 16)["spec"]["template"]["spec"],
        builders.refresh_cronjob("p", NAMESPACE, spec)["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ]
    assert [p["imagePullSecrets"] for p in pods] == [[{"name": "registry-example"}]] * 3

    own = template(instance("apiKey", **shared, **{"instance.imagePullSecrets[0].name": "proxy-registry"}))
    assert one(own, "ClaudeProxy")["spec"]["imagePullSecrets"] == [{"name": "proxy-registry"}]
    assert one(own, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-example"}]
    for objects in (template(), template(instance("apiKey"))):
        assert all("imagePullSecrets" not in o.get("spec", {}) for o in of_kind(objects, "ClaudeProxy"))
        assert "imagePullSecrets" not in one(objects, "Deployment")["spec"]["template"]["spec"]


def test_instance_outside_watched_namespaces_is_refused() -> None:
    error = helm.failure(instance("apiKey", **{"operator.watchNamespaces": "{other}"}))
    assert "not in operator.watchNamespaces" in error
    objects = template(instance("apiKey", **{"operator.watchNamespaces": "{team}"}))
    assert one(objects, "ClaudeProxy")["metadata"]["namespace"] == "team"
