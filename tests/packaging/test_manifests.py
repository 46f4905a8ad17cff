"""The plain manifests: generated from the chart and up to date, valid for the Kubernetes API, applying in order,
and granting exactly the operator's rules."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from claude_proxy.config import DEFAULT_MODELS
from claude_proxy_operator import builders
from claude_proxy_operator.main import build_parser
from claude_proxy_operator.rbac import RULES
from claude_proxy_operator.spec import parse_spec
from tests.operator import crdtools
from tests.packaging import helm
from tests.packaging.chart_support import operator_role

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
    assert operator_role(objects())["rules"] == RULES
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
        if any(doc.get("kind") == "CustomResourceDefinition" for doc in crdtools.load_all(path))
    ]
    assert [p.relative_to(helm.ROOT).as_posix() for p in crds] == ["manifests/crds/claudeproxies.claudeproxy.dev.yaml"]
    modes = {next(iter(p["spec"]["auth"])) for p in crdtools.example_proxies()}
    assert modes == {"apiKey", "accessToken", "oauth"}


# --- kubectl apply -k ------------------------------------------------------------------------------------------------

MANIFESTS = helm.ROOT / "manifests"
CRD_FILE = MANIFESTS / "crds" / "claudeproxies.claudeproxy.dev.yaml"


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_kustomize_builds_exactly_the_plain_manifests() -> None:
    built = helm.kustomize(MANIFESTS)
    plain = crdtools.load_all(CRD_FILE) + objects()
    assert sorted(map(_key, built)) == sorted(map(_key, plain))
    by_key = {_key(o): o for o in plain}
    for obj in built:
        assert obj == by_key[_key(obj)]  # the default images are the chart's own: nothing rewritten


def test_kustomize_images_override_names_both_images(tmp_path: Path) -> None:
    """A kustomization of the user's own over manifests/ moves the operator and the proxy image to their registry."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(MANIFESTS, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources: [{base}]\n"
        "images:\n"
        "  - {name: claude-code-proxy-operator, newName: registry.example/team/claude-code-proxy-operator}\n"
        "  - {name: claude-code-proxy, newName: registry.example/team/claude-code-proxy, newTag: 0.1.0-team}\n"
    )
    built = helm.kustomize(overlay)
    container = _operator_container(built)
    assert container["image"] == "registry.example/team/claude-code-proxy-operator:0.1.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLAUDE_PROXY_IMAGE"] == "registry.example/team/claude-code-proxy:0.1.0-team"
    untouched = {e["name"]: e.get("value") for e in _operator_container(objects())["env"]}
    assert {k: v for k, v in env.items() if k != "CLAUDE_PROXY_IMAGE"} == {
        k: v for k, v in untouched.items() if k != "CLAUDE_PROXY_IMAGE"
    }
    for obj in built:
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_kustomization_names_the_images_the_chart_renders() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    container = _operator_container(objects())
    proxy = next(e["value"] for e in container["env"] if e["name"] == "CLAUDE_PROXY_IMAGE")
    tagged = {f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    assert tagged == {container["image"], proxy}
    version = tomllib.loads((helm.ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {i["newTag"] for i in kustomization["images"]} == {version}


# --- one model id ----------------------------------------------------------------------------------------------------

MODEL_ID = re.compile(r"\bclaude-(?:opus|sonnet|haiku)-[0-9][0-9a-z.-]*[0-9a-z]")
DOCUMENTED = ["README.md", *(f"docs/{p.name}" for p in sorted((helm.ROOT / "docs").glob("*.md"))),
              "operator/README.md", "charts/claude-code-proxy/values.yaml",
              "charts/claude-code-proxy/templates/NOTES.txt", *(f"manifests/examples/{p.name}" for p in
              sorted((helm.ROOT / "manifests" / "examples").glob("*.yaml")))]  # fmt: skip


def test_docs_examples_and_notes_name_one_default_model_the_proxy_lists() -> None:
    """Every model id a user reads is one the proxy's fallback model list has (dotted spellings normalised), and
    every place that names the model to use names the same one."""
    default = "claude-sonnet-4-6"
    assert default in DEFAULT_MODELS
    for name in DOCUMENTED:
        text = (helm.ROOT / name).read_text()
        for found in MODEL_ID.findall(text):
            assert found.replace(".", "-") in DEFAULT_MODELS, f"{name}: {found}"
    chosen = []
    for proxy in crdtools.example_proxies():
        chosen.append(proxy["spec"]["model"]["default"])
    readme = (helm.ROOT / "README.md").read_text()
    chosen += re.findall(r'(?:modelId|model)[:=] ?"(claude-[^"]+)"', readme)
    notes = (helm.CHART / "templates" / "NOTES.txt").read_text()
    chosen += re.findall(r'default "(claude-[^"]+)"', notes)
    assert len(chosen) >= 5 and set(chosen) == {default}, chosen


def test_documented_recipes_name_what_the_operator_builds() -> None:
    """The uninstall, refresh-now and scraping recipes name the labels, annotation and CRD the code uses."""
    kubernetes = (helm.ROOT / "docs" / "kubernetes.md").read_text()
    operations = (helm.ROOT / "docs" / "operations.md").read_text()
    [selector] = re.findall(r"kubectl delete pvc -A -l (\S+)", kubernetes)
    spec = parse_spec({"auth": {"oauth": {"seedSecretRef": {"name": "c"}}}}, default_image="img")
    labels = builders.credentials_pvc("p", "rockbot", spec)["metadata"]["labels"]
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    assert wanted.items() <= labels.items()
    for other in builders.seed_job("p", "rockbot", spec, "0" * 16), builders.deployment("p", "rockbot", spec, "0"):
        assert not wanted.items() <= other["metadata"]["labels"].items()  # only the volume
    crd = crdtools.crd()["metadata"]["name"]
    assert f"kubectl delete crd {crd}" in kubernetes
    assert f"annotate claudeproxy claude-proxy-oauth --overwrite {builders.REFRESH_NOW_ANNOTATION}=" in kubernetes
    for key, value in builders.SCRAPE_ANNOTATIONS.items():
        assert f"`{key}: " in operations and value in operations
