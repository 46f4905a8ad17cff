"""The CRD, the manifests and the operator against a real kube-apiserver and etcd (tests/operator/envtest.py).

Runs where $KUBEBUILDER_ASSETS names a directory holding `etcd` and `kube-apiserver` (the envtest convention, e.g.
`setup-envtest use -p path`), with kubectl from $KUBECTL, PATH or .tools/bin; otherwise every test here is skipped
with the reason, shown by `pytest -ra`. The same operator and CRD run on the in-process emulator in the other
tests; this layer is what catches what only a real API server checks (CEL cost budgets, structural-schema rules,
RBAC objects, server-side apply).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from claude_proxy_operator.config import Config
from claude_proxy_operator.handlers import build_registry, configure
from tests.operator import envtest

pytestmark = pytest.mark.skipif(
    envtest.missing_assets() is not None,
    reason=f"no real API server: {envtest.missing_assets()}",
)

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "envtest"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[envtest.ControlPlane]:
    with envtest.control_plane(tmp_path_factory.mktemp("control-plane")) as running:
        running.kubectl("apply", "-f", str(ROOT / "manifests" / "crds"))
        running.kubectl("wait", "--for", "condition=established", "--timeout", "60s",
                        "crd/claudeproxies.claudeproxy.dev")  # fmt: skip
        running.kubectl("create", "namespace", NAMESPACE)
        yield running


def _json(plane: envtest.ControlPlane, *args: str) -> Any:
    found = plane.kubectl("get", "-o", "json", *args, check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def _eventually(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: last answer {last!r}")


def test_the_operator_manifests_are_accepted(plane: envtest.ControlPlane) -> None:
    result = plane.kubectl("apply", "-f", str(ROOT / "manifests" / "operator"))
    assert "clusterrole.rbac.authorization.k8s.io/" in result.stdout
    assert _json(plane, "deployment", "-n", "claude-proxy-system", "claude-code-proxy-operator") is not None


@pytest.mark.parametrize("example", sorted((ROOT / "manifests" / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_is_accepted(plane: envtest.ControlPlane, example: Path) -> None:
    plane.kubectl("apply", "-n", NAMESPACE, "--dry-run=server", "-f", str(example))


def test_the_cel_rules_refuse_what_they_promise_to(plane: envtest.ControlPlane) -> None:
    both = {
        "apiVersion": "claudeproxy.dev/v1alpha1",
        "kind": "ClaudeProxy",
        "metadata": {"name": "two-logins", "namespace": NAMESPACE},
        "spec": {"auth": {"apiKey": {"secretRef": {"name": "a"}}, "accessToken": {"secretRef": {"name": "b"}}}},
    }
    refused = plane.kubectl("apply", "-f", "-", stdin=json.dumps(both), check=False)
    assert refused.returncode != 0
    assert "auth takes exactly one of apiKey, accessToken, oauth" in refused.stderr


@pytest.fixture
def operator(plane: envtest.ControlPlane) -> Iterator[None]:
    """The operator in a thread of its own, logged in through the control plane's kubeconfig."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    registry = build_registry(Config(default_image="claude-code-proxy:envtest", resync_seconds=1.0))
    settings = kopf.OperatorSettings()
    configure(settings)
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(registry=registry, settings=settings, namespaces=[NAMESPACE], standalone=True,
                              stop_flag=stop, ready_flag=ready)
            )  # fmt: skip
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="kopf-envtest", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the operator did not start"
        yield
    finally:
        stop.set()
        thread.join(30)
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
    assert not failure, failure


def test_the_operator_converges_a_proxy_on_the_real_api_server(plane: envtest.ControlPlane, operator: None) -> None:
    plane.kubectl("create", "secret", "generic", "-n", NAMESPACE, "anthropic", "--from-literal=api-key=placeholder")
    proxy = {
        "apiVersion": "claudeproxy.dev/v1alpha1",
        "kind": "ClaudeProxy",
        "metadata": {"name": "real", "namespace": NAMESPACE},
        "spec": {"auth": {"apiKey": {"secretRef": {"name": "anthropic"}}}},
    }
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(proxy))
    deployment = _eventually(lambda: _json(plane, "deployment", "-n", NAMESPACE, "real"), "the Deployment")
    managers = {entry.get("manager") for entry in deployment["metadata"].get("managedFields") or ()}
    assert "claude-proxy-operator" in managers  # applied server-side under the operator's field manager
    assert _json(plane, "service", "-n", NAMESPACE, "real") is not None
    assert _json(plane, "serviceaccount", "-n", NAMESPACE, "real") is not None

    def reported() -> Any:
        found = _json(plane, "claudeproxy", "-n", NAMESPACE, "real") or {}
        return (found.get("status") or {}).get("endpoint")

    assert _eventually(reported, "status.endpoint").startswith("http://real.envtest.svc")

    # No controller-manager runs: play the Deployment controller, as the emulator tests do.
    available = {"status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}}
    plane.kubectl("patch", "deployment", "real", "-n", NAMESPACE, "--subresource=status", "--type=merge",
                  "-p", json.dumps(available))  # fmt: skip

    def ready_event() -> Any:
        events = _json(plane, "events", "-n", NAMESPACE) or {"items": []}
        return [
            e for e in events["items"]
            if e["involvedObject"].get("name") == "real" and e["reason"] == "Ready"
            and e.get("reportingComponent") == "claude-proxy-operator"
        ]  # fmt: skip

    assert _eventually(ready_event, "the Ready Event, posted by the operator")
