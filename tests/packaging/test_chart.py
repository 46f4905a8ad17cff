"""The Helm chart: lint, what it renders for default values and each auth mode (valid for the Kubernetes API, the
ClaudeProxy valid for the CRD), RBAC equal to what the operator calls, hardening, and the values it refuses."""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from claude_proxy_operator import builders
from claude_proxy_operator import config as operator_config
from claude_proxy_operator.main import build_parser
from claude_proxy_operator.rbac import RULES
from claude_proxy_operator.spec import parse_spec
from tests.operator import crdtools
from tests.packaging import helm
from tests.packaging.helm import NAMESPACE, RELEASE, of_kind, one, template

K8S = kubernetes_validate.latest_version()
VERSION = tomllib.loads((helm.ROOT / "pyproject.toml").read_text())["project"]["version"]
MODES = ("apiKey", "accessToken", "oauth")


def instance(mode: str, **more: str) -> dict[str, str]:
    return {"instance.enabled": "true", "instance.auth.mode": mode, **more}


def validate_k8s(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] != "ClaudeProxy":
            kubernetes_validate.validate(obj, K8S, strict=True)


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- lint and versions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, *(instance(mode) for mode in MODES)], ids=["default", *MODES])
def test_helm_lint_strict(values: dict[str, str]) -> None:
    result = helm.run("lint", "--strict", str(helm.CHART), *helm.set_args(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    # The operator's built-in default proxy image is the one the chart points it at by default.
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in operator_container(template())["env"]}
    assert env["CLAUDE_PROXY_IMAGE"] == operator_config.DEFAULT_IMAGE == f"claude-code-proxy:{VERSION}"
    assert operator_container(template())["image"] == f"claude-code-proxy-operator:{VERSION}"


def test_crd_in_chart_is_byte_equal_to_the_source() -> None:
    source = helm.ROOT / "manifests" / "crds" / "claudeproxies.claudeproxy.dev.yaml"
    copies = list((helm.CHART / "crds").iterdir())
    assert [p.name for p in copies] == [source.name]
    assert copies[0].read_bytes() == source.read_bytes(), "run `make manifests`"


# --- default values -----------------------------------------------------------------------------------------------


def test_default_render_is_the_operator_only_and_valid() -> None:
    objects = template(extra=("--include-crds",))
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == sorted(
        ["CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"]
    )
    validate_k8s(objects)
    for obj in objects:
        if obj["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_rbac_is_exactly_what_the_operator_calls() -> None:
    objects = template()
    assert one(objects, "ClusterRole")["rules"] == RULES
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(objects, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod.get("automountServiceAccountToken", True), "the operator needs its token"


def test_watch_namespaces_gives_roles_and_namespaced_flags() -> None:
    objects = template({"operator.watchNamespaces": "{team,ml}"})
    validate_k8s(objects)
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    roles, bindings = of_kind(objects, "Role"), of_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "team"]
    assert all(r["rules"] == RULES for r in roles)
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    args = build_parser().parse_args(operator_container(objects)["args"])
    assert args.namespace == ["team", "ml"] and not args.all_namespaces


def test_operator_deployment_shape_and_probes() -> None:
    objects = template()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    container = operator_container(objects)
    args = build_parser().parse_args(container["args"])  # the operator's own parser accepts them
    assert args.all_namespaces and args.namespace == []
    liveness = urlparse(args.liveness)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert ports[get["port"]] == liveness.port and get["path"] == liveness.path
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    config = operator_config.Config.from_env(env)  # the operator reads what the chart sets
    assert config.resync_seconds == 60 and config.cluster_domain == "cluster.local"


def test_operator_pod_is_hardened() -> None:
    pod = one(template(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["enableServiceLinks"] is False
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged", False) is False
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    assert container["resources"]["limits"]["memory"]


def test_images_and_operator_settings_come_from_values() -> None:
    values = {
        "operator.image.repository": "registry.example/ops/op",
        "str:operator.image.tag": "1.2.3",
        "proxy.image.repository": "registry.example/ops/proxy",
        "str:proxy.image.tag": "1.2.4",
        "operator.resyncSeconds": "15",
        "operator.clusterDomain": "corp.local",
        "operator.verbose": "true",
    }
    objects = template(values)
    validate_k8s(objects)
    container = operator_container(objects)
    assert container["image"] == "registry.example/ops/op:1.2.3"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    config = operator_config.Config.from_env(env)
    assert config.default_image == "registry.example/ops/proxy:1.2.4"
    assert (config.resync_seconds, config.cluster_domain) == (15.0, "corp.local")
    assert build_parser().parse_args(container["args"]).verbose


# --- the instance -------------------------------------------------------------------------------------------------


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


def test_instance_disabled_by_default() -> None:
    assert of_kind(template(), "ClaudeProxy") == []


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


# --- Prometheus -------------------------------------------------------------------------------------------------------

# The fields of monitoring.coreos.com/v1 ServiceMonitor this chart sets (a subset of what its CRD defines).
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "targetLabels"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout"}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _service_monitor(values: dict[str, str]) -> dict[str, Any]:
    monitor = one(template(values), "ServiceMonitor")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    # Its metadata, and its selector's labels, as the API server would check them (on a kind it knows).
    for labels in (monitor["metadata"].get("labels") or {}, monitor["spec"]["selector"]["matchLabels"]):
        holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**monitor["metadata"], "labels": labels}}
        kubernetes_validate.validate(holder, K8S, strict=True)
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT
        assert DURATION.match(endpoint["interval"]), endpoint
        assert DURATION.match(endpoint.get("scrapeTimeout", "10s")), endpoint
    return monitor


def test_service_monitor_is_off_by_default() -> None:
    for values in ({}, instance("apiKey")):
        assert of_kind(template(values), "ServiceMonitor") == []


def test_service_monitor_scrapes_every_proxy_service_the_operator_builds() -> None:
    monitor = _service_monitor({"serviceMonitor.enabled": "true", "serviceMonitor.labels.release": "kps"})
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # It picks the Service of any ClaudeProxy, on the port that serves /metrics.
    spec = parse_spec({"auth": {"apiKey": {"secretRef": {"name": "k"}}}}, default_image="img")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    for name in ("p", "another"):
        svc = builders.service(name, "rockbot", spec)
        assert wanted.items() <= svc["metadata"]["labels"].items()
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {port["name"] for port in svc["spec"]["ports"]}
    deployment = builders.deployment("p", "rockbot", spec, "0")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert endpoint["path"] == builders.METRICS_PATH
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [builders.PROXY_PORT]
    assert endpoint["interval"] == "30s" and "scrapeTimeout" not in endpoint
    assert monitor["spec"]["targetLabels"] == [builders.INSTANCE_LABEL]


def test_service_monitor_follows_watched_namespaces_and_timing_values() -> None:
    monitor = _service_monitor(
        {
            "serviceMonitor.enabled": "true",
            "operator.watchNamespaces": "{rockbot,team}",
            "serviceMonitor.interval": "1m",
            "serviceMonitor.scrapeTimeout": "15s",
        }
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["rockbot", "team"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "15s")


# --- values the schema refuses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"instance.auth.mode": "password"}, "/instance/auth/mode"),
        ({"instance.name": "a" * 41}, "/instance/name"),
        ({"instance.name": "Bad_Name"}, "/instance/name"),
        ({"instance.replicas": "21"}, "/instance/replicas"),
        ({"instance.replicas": "-1"}, "/instance/replicas"),
        ({"instance.logLevel": "loud"}, "/instance/logLevel"),
        ({"instance.service.type": "ExternalName"}, "/instance/service/type"),
        ({"instance.service.port": "70000"}, "/instance/service/port"),
        ({"instance.upstreamBaseURL": "ftp://gateway"}, "/instance/upstreamBaseURL"),
        ({"instance.auth.oauth.tokenURL": "localhost/token"}, "/instance/auth/oauth/tokenURL"),
        ({"instance.auth.oauth.storage.accessMode": "ReadWriteOncePod"}, "/instance/auth/oauth/storage/accessMode"),
        ({"instance.auth.oauth.storage.size": "lots"}, "/instance/auth/oauth/storage/size"),
        ({"instance.auth.oauth.refresh.before": "0"}, "/instance/auth/oauth/refresh/before"),
        ({"instance.auth.apiKey.secretName": ""}, "/instance/auth/apiKey/secretName"),
        ({"instance.model.aliases.fast": "claude=x"}, "/instance/model/aliases"),
        ({"instance.networkPolicy.allowFrom[0].podSelector.matchLabels.a": "b"}, "/instance/networkPolicy"),
        (
            {"instance.networkPolicy.enabled": "true", "instance.networkPolicy.allowFrom[0].ports": "80"},
            "/instance/networkPolicy/allowFrom/0",
        ),
        ({"instance.enabeld": "true"}, "enabeld"),
        ({"operator.watchNamespaces": "{Not_A_Namespace}"}, "/operator/watchNamespaces/0"),
        ({"operator.resyncSeconds": "0"}, "/operator/resyncSeconds"),
        ({"operator.image.pullPolicy": "Sometimes"}, "/operator/image/pullPolicy"),
        ({"proxy.image.repository": ""}, "/proxy/image/repository"),
        ({"serviceMonitor.interval": "soon"}, "/serviceMonitor/interval"),
        ({"serviceMonitor.enabeld": "true"}, "enabeld"),
        ({"instance.imagePullSecrets[0].key": "x"}, "/instance/imagePullSecrets/0"),
        ({"operator.imagePullSecrets[0].name": "Bad_Name"}, "/operator/imagePullSecrets/0/name"),
    ],
)
def test_values_schema_refuses(values: dict[str, str], fragment: str) -> None:
    error = helm.failure(values)
    assert fragment in error, error


def test_instance_name_limit_matches_the_crd() -> None:
    """The schema's 40-character limit is the CRD's: the longest accepted name is accepted by the CRD too."""
    proxy = one(template(instance("apiKey", **{"instance.name": "a" * 40})), "ClaudeProxy")
    assert crdtools.validate(proxy) == []
    proxy["metadata"]["name"] = "a" * 41
    assert crdtools.validate(proxy) != []


# --- NOTES.txt -------------------------------------------------------------------------------------------------------


def notes(values: dict[str, str]) -> str:
    result = helm.run(
        "install", RELEASE, str(helm.CHART), "--dry-run=client", "--namespace", NAMESPACE, *helm.set_args(values)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize(("port", "endpoint"), [("80", "http://p.team.svc.cluster.local/v1"),
                                                ("8080", "http://p.team.svc.cluster.local:8080/v1")])  # fmt: skip
def test_notes_give_rockbot_the_endpoint(port: str, endpoint: str) -> None:
    text = notes(instance("apiKey", **{"instance.name": "p", "instance.service.port": port}))
    assert re.search(rf'endpoint: "{re.escape(endpoint)}"', text), text
    assert "kubectl -n team create secret generic anthropic-api-key" in text
    # The endpoint NOTES gives is the one the operator reports in status.
    from claude_proxy_operator.builders import endpoint as status_endpoint

    assert status_endpoint("p", "team", int(port)) == endpoint


def test_notes_tell_how_to_seed_a_login() -> None:
    text = notes(instance("oauth"))
    assert "claude auth login" in text
    assert "--from-file=.credentials.json=" in text and "create secret generic claude-credentials" in text
    assert "claude-proxy-refresh" in text
    annotate = f"kubectl -n team annotate claudeproxy claude-proxy --overwrite {builders.REFRESH_NOW_ANNOTATION}="
    assert annotate in text


def test_notes_without_instance_show_how_to_create_one() -> None:
    text = notes({})
    assert "kind: ClaudeProxy" in text and "status.endpoint" in text


@pytest.mark.parametrize("key", ["keys", "client.keys"])
def test_notes_read_back_the_client_key_and_send_it_as_bearer(key: str) -> None:
    values = instance("apiKey", **{"instance.clientAuth.secretName": "ck", "instance.clientAuth.key": key})
    text = notes(values)
    [read_back] = [line.strip() for line in text.splitlines() if line.strip().startswith("kubectl -n team get secret")]
    # The same command against the Secret NOTES says to create, built offline by kubectl itself.
    create = f"{helm.kubectl_binary()} create secret generic ck --from-literal={key}=first-key,second-key"
    command = read_back.replace("kubectl -n team get secret ck", f"{create} --dry-run=client", 1)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "first-key"), result.stderr
    assert f'KEY="$({read_back})"' in text
    assert 'curl http://localhost:8080/v1/chat/completions -H "Authorization: Bearer $KEY"' in text


def test_notes_without_client_keys_still_send_a_bearer_header() -> None:
    text = notes(instance("apiKey"))
    assert "KEY=unused" in text and '-H "Authorization: Bearer $KEY"' in text
    assert "get secret" not in text
