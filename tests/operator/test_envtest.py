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

from claude_proxy_operator import builders
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
    found = plane.kubectl("get", "-o", "json", "--show-managed-fields", *args, check=False)
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
    if not envtest.checks_cel_rules():
        pytest.skip("this kube-apiserver predates CEL validation rules in beta: it does not check them")
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
def operator(plane: envtest.ControlPlane, request: pytest.FixtureRequest) -> Iterator[None]:
    """The operator in a thread of its own, logged in through the control plane's kubeconfig; a short resync unless
    the test is marked with another (`resync`)."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    marker = request.node.get_closest_marker("resync")
    resync = marker.args[0] if marker else 1.0
    registry = build_registry(Config(default_image="claude-code-proxy:envtest", resync_seconds=resync))
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


def _apply(plane: envtest.ControlPlane, obj: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def _finish_seed(plane: envtest.ControlPlane, name: str) -> None:
    """Play the Job controller and the kubelet for the seed Job: a pod that reports a copied login, a Complete Job."""
    jobs = _eventually(
        lambda: (_json(plane, "jobs", "-n", NAMESPACE, "-l", f"app.kubernetes.io/component=seed,"
                                                              f"app.kubernetes.io/instance={name}") or {}).get("items"),
        "the seed Job",
    )  # fmt: skip
    job = jobs[0]["metadata"]["name"]
    labels = {**builders.selector(name, "seed"), "job-name": job}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-x", "namespace": NAMESPACE, "labels": labels},
        "spec": {"containers": [{"name": "claude-proxy", "image": "claude-code-proxy:envtest"}]},
    }
    _apply(plane, pod)
    line = json.dumps({"command": "seed", "result": "copied", "reason": "forced", "message": "credentials copied",
                       "expiresAt": "2999-01-01T00:00:00Z"})  # fmt: skip
    stamp = "2030-01-01T00:00:00Z"
    terminated = {"exitCode": 0, "reason": "Completed", "message": line, "startedAt": stamp, "finishedAt": stamp}
    status = {"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "claude-proxy", "image": "claude-code-proxy:envtest", "imageID": "", "ready": False,
        "restartCount": 0, "state": {"terminated": terminated}}]}}  # fmt: skip
    plane.kubectl("patch", "pod", f"{job}-x", "-n", NAMESPACE, "--subresource=status", "--type=merge",
                  "-p", json.dumps(status))  # fmt: skip
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1,
                       "startTime": stamp, "completionTime": stamp}}  # fmt: skip
    plane.kubectl("patch", "job", job, "-n", NAMESPACE, "--subresource=status", "--type=merge",
                  "-p", json.dumps(done))  # fmt: skip


@pytest.mark.resync(Config.resync_seconds)
def test_the_refresh_now_annotation_starts_its_job_at_once_at_the_default_resync(
    plane: envtest.ControlPlane, operator: None
) -> None:
    if plane.kubectl("explain", "cronjob.spec.timeZone", check=False).returncode != 0:
        pytest.skip("this kube-apiserver predates CronJob spec.timeZone (1.25), which the refresh CronJob sets")
    plane.kubectl("create", "secret", "generic", "-n", NAMESPACE, "oauth-seed",
                  "--from-literal=.credentials.json={}")  # fmt: skip
    proxy = {
        "apiVersion": "claudeproxy.dev/v1alpha1",
        "kind": "ClaudeProxy",
        "metadata": {"name": "annotated", "namespace": NAMESPACE},
        "spec": {"auth": {"oauth": {"seedSecretRef": {"name": "oauth-seed"}}}},
    }
    _apply(plane, proxy)
    _finish_seed(plane, "annotated")
    _eventually(
        lambda: ((_json(plane, "claudeproxy", "-n", NAMESPACE, "annotated") or {}).get("status") or {}).get("seed"),
        "the seed in status",
    )
    plane.kubectl("annotate", "claudeproxy", "annotated", "-n", NAMESPACE, "claudeproxy.dev/refresh-now=1")

    def refresh_now_jobs() -> list[str]:
        jobs = (_json(plane, "jobs", "-n", NAMESPACE) or {}).get("items") or []
        return [j["metadata"]["name"] for j in jobs if j["metadata"]["name"].startswith("annotated-refresh-now-")]

    # Within 5 s, where the resync interval is 60 s: a watched event started it.
    assert len(_eventually(refresh_now_jobs, "the refresh-now Job", timeout=5.0)) == 1
    annotations = _json(plane, "claudeproxy", "-n", NAMESPACE, "annotated")["metadata"]["annotations"]
    assert "operator.claudeproxy.dev/last-handled-configuration" in annotations
    assert "claudeproxy.dev/kopf-managed" not in annotations


def test_a_proxy_named_like_a_foreign_service_leaves_it_untouched(plane: envtest.ControlPlane, operator: None) -> None:
    plane.kubectl("create", "secret", "generic", "-n", NAMESPACE, "billing-key", "--from-literal=api-key=x")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "billing", "namespace": NAMESPACE, "labels": {"app": "billing"}},
        "spec": {"selector": {"app": "billing"}, "ports": [{"port": 443, "targetPort": 8443}]},
    }
    _apply(plane, service)
    before = _json(plane, "service", "-n", NAMESPACE, "billing")
    proxy = {
        "apiVersion": "claudeproxy.dev/v1alpha1",
        "kind": "ClaudeProxy",
        "metadata": {"name": "billing", "namespace": NAMESPACE},
        "spec": {"auth": {"apiKey": {"secretRef": {"name": "billing-key"}}}},
    }
    _apply(plane, proxy)

    def conflict() -> Any:
        found = _json(plane, "claudeproxy", "-n", NAMESPACE, "billing") or {}
        ready = [c for c in (found.get("status") or {}).get("conditions") or () if c["type"] == "Ready"]
        return ready and ready[0]["reason"] == "NameConflict" and ready[0]

    assert f"Service {NAMESPACE}/billing" in _eventually(conflict, "Ready=False NameConflict")["message"]
    time.sleep(3)  # a few resyncs
    after = _json(plane, "service", "-n", NAMESPACE, "billing")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["selector"] == {"app": "billing"}
    managers = {entry.get("manager") for entry in after["metadata"].get("managedFields") or ()}
    assert "claude-proxy-operator" not in managers
    assert _json(plane, "deployment", "-n", NAMESPACE, "billing") is None
