"""The plain manifests: generated from the chart and up to date, valid for the Kubernetes API, applying in order,
and granting exactly the operator's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from claude_proxy_operator.main import build_parser
from claude_proxy_operator.rbac import RULES
from tests.operator import crdtools
from tests.packaging import helm

K8S = kubernetes_validate.latest_version()
OPERATOR_DIR = helm.ROOT / "manifests" / "operator"
FILES = sorted(OPERATOR_DIR.glob("*.yaml"))


def objects() -> list[dict[str, Any]]:
    return [doc for path in FILES for doc in crdtools.load_all(path)]


def test_generated_files_are_up_to_date() -> None:
    module = helm.render_manifests()
    assert module.stale(module.render()) == [], "run `make manifests`"


def test_a_stale_file_is_reported() -> None:
    module = helm.render_manifests()
    edited = dict(module.render())
    target = OPERATOR_DIR / "20-deployment.yaml"
    edited[target] = edited[target].replace("replicas: 1", "replicas: 2")
    assert module.stale(edited) == [target]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_object_is_valid(path: Path) -> None:
    docs = crdtools.load_all(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)


def test_apply_order_and_namespace() -> None:
    kinds = [obj["kind"] for obj in objects()]
    assert kinds[0] == "Namespace"
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    namespace = objects()[0]["metadata"]["name"]
    for obj in objects()[1:]:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == namespace
    binding = next(o for o in objects() if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == namespace


def test_rbac_and_operator_flags() -> None:
    role = next(o for o in objects() if o["kind"] == "ClusterRole")
    assert role["rules"] == RULES
    deployment = next(o for o in objects() if o["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert build_parser().parse_args(container["args"]).all_namespaces
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_helm_bookkeeping_in_plain_manifests() -> None:
    text = "".join(path.read_text() for path in FILES)
    assert "helm.sh/chart" not in text and "managed-by: Helm" not in text
    assert "# Source:" not in text


def test_crd_and_examples_exist_once_each() -> None:
    crds = [
        path
        for path in (helm.ROOT / "manifests").rglob("*.yaml")
        if any(doc["kind"] == "CustomResourceDefinition" for doc in crdtools.load_all(path))
    ]
    assert [p.relative_to(helm.ROOT).as_posix() for p in crds] == ["manifests/crds/claudeproxies.claudeproxy.dev.yaml"]
    modes = {next(iter(p["spec"]["auth"])) for p in crdtools.example_proxies()}
    assert modes == {"apiKey", "accessToken", "oauth"}
