"""Running helm (and loading what it renders) for the packaging tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "claude-code-proxy"
RELEASE = "rel"
NAMESPACE = "team"


@cache
def binary() -> str:
    """helm as the Makefile exports it ($HELM), else on PATH, else in .tools/bin; `make test` fetches it."""
    for candidate in (os.environ.get("HELM"), shutil.which("helm"), str(ROOT / ".tools" / "bin" / "helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("helm not found: run `make tools` (or set HELM) before these tests")


@cache
def kubectl_binary() -> str:
    """kubectl as the Makefile exports it ($KUBECTL), else on PATH, else in .tools/bin; `make test` fetches it."""
    for candidate in (os.environ.get("KUBECTL"), shutil.which("kubectl"), str(ROOT / ".tools" / "bin" / "kubectl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("kubectl not found: run `make tools` (or set KUBECTL) before these tests")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize <directory>` builds (what `kubectl apply -k` would send)."""
    result = subprocess.run([kubectl_binary(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=60)


def set_args(values: dict[str, str] | None) -> list[str]:
    args: list[str] = []
    for key, value in (values or {}).items():
        args += ["--set-string" if key.startswith("str:") else "--set", f"{key.removeprefix('str:')}={value}"]
    return args


@cache
def _template(values: tuple[tuple[str, str], ...], namespace: str, extra: tuple[str, ...]) -> str:
    result = run("template", RELEASE, str(CHART), "--namespace", namespace, *set_args(dict(values)), *extra)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return result.stdout


def template(
    values: dict[str, str] | None = None, namespace: str = NAMESPACE, extra: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The objects `helm template` renders for these --set values (fresh copies: tests may change them)."""
    text = _template(tuple(sorted((values or {}).items())), namespace, extra)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def failure(values: dict[str, str], namespace: str = NAMESPACE, values_file: Path | None = None) -> str:
    """helm template's error output for values it must refuse (fails the test when it renders)."""
    extra = ["--values", str(values_file)] if values_file else []
    result = run("template", RELEASE, str(CHART), "--namespace", namespace, *set_args(values), *extra)
    assert result.returncode != 0, f"helm rendered values it should refuse: {values}"
    return result.stderr


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@cache
def render_manifests() -> ModuleType:
    """scripts/render_manifests.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "scripts" / "render_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
