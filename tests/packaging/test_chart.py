"""The Helm chart: lint, versions, what it renders for default values (the operator: RBAC equal to what it calls,
hardening, settings from values), and the values its schema refuses. The instance, the ServiceMonitor and NOTES.txt
have files of their own."""

from __future__ import annotations

import tomllib
from urllib.parse import urlparse

import pytest
import yaml

from claude_proxy_operator import config as operator_config
from claude_proxy_operator.main import build_parser
from claude_proxy_operator.rbac import RULES
from tests.operator import crdtools
from tests.packaging import helm
from tests.packaging.chart_support import MODES, aggregated, instance, operator_container, operator_role, validate_k8s
from tests.packaging.helm import NAMESPACE, of_kind, one, template

VERSION = tomllib.loads((helm.ROOT / "pyproject.toml").read_text())["project"]["version"]


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
    operator = ["CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"]
    assert kinds == sorted([*operator, "ClusterRole", "ClusterRole"])  # + aggregated into view, edit/admin
    validate_k8s(objects)
    for obj in objects:
        if obj["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_rbac_is_exactly_what_the_operator_calls() -> None:
    objects = template()
    assert operator_role(objects)["rules"] == RULES
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": operator_role(objects)["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod.get("automountServiceAccountToken", True), "the operator needs its token"


def test_watch_namespaces_gives_roles_and_namespaced_flags() -> None:
    objects = template({"operator.watchNamespaces": "{team,ml}"})
    validate_k8s(objects)
    assert [role for role in of_kind(objects, "ClusterRole") if not aggregated(role)] == []
    assert of_kind(objects, "ClusterRoleBinding") == []
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
    assert env["CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS"] == "20" and config.login_seconds == 20


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
        "operator.loginSeconds": "5",
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
    assert config.login_seconds == 5.0
    assert build_parser().parse_args(container["args"]).verbose


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
        (
            {
                "instance.networkPolicy.enabled": "false",
                "instance.networkPolicy.allowFrom[0].podSelector.matchLabels.a": "b",
            },
            "/instance/networkPolicy",
        ),
        (
            {"instance.networkPolicy.enabled": "true", "instance.networkPolicy.allowFrom[0].ports": "80"},
            "/instance/networkPolicy/allowFrom/0",
        ),
        ({"instance.enabeld": "true"}, "enabeld"),
        ({"operator.watchNamespaces": "{Not_A_Namespace}"}, "/operator/watchNamespaces/0"),
        ({"operator.resyncSeconds": "0"}, "/operator/resyncSeconds"),
        ({"operator.loginSeconds": "-1"}, "/operator/loginSeconds"),
        ({"operator.image.pullPolicy": "Sometimes"}, "/operator/image/pullPolicy"),
        ({"proxy.image.repository": ""}, "/proxy/image/repository"),
        ({"serviceMonitor.interval": "soon"}, "/serviceMonitor/interval"),
        ({"serviceMonitor.enabeld": "true"}, "enabeld"),
        ({"instance.imagePullSecrets[0].key": "x"}, "/instance/imagePullSecrets/0"),
        ({"operator.imagePullSecrets[0].name": "Bad_Name"}, "/operator/imagePullSecrets/0/name"),
        ({"operator.allowedImages[0]": "a b"}, "/operator/allowedImages/0"),
        ({"rbac.aggregateToDefaultRoles": "maybe"}, "/rbac/aggregateToDefaultRoles"),
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
