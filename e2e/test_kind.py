"""The Kubernetes path end to end, in a real kind cluster: build and load the images, `helm install` the chart,
run a ClaudeProxy (oauth mode, the one with every moving part) against a fake Anthropic API and a fake OAuth
endpoint running in the cluster, call it through its Service with the official `openai` SDK, rotate the token with
the refresh CronJob and see the proxy use the new one, then delete it and see its children go; last, uninstall the
chart under a second one and delete that one without the operator.

Run with `make e2e` (needs Docker and kind; helm and kubectl as `make tools` provides). E2E_KEEP=1 keeps the cluster;
E2E_CLUSTER names it (default claude-proxy-e2e).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from e2e.conftest import ROOT, tool
from e2e.fake.upstream import seed_credentials

pytestmark = pytest.mark.e2e

CLUSTER = os.environ.get("E2E_CLUSTER", "claude-proxy-e2e")
TAG = "e2e"
IMAGES = {
    f"claude-code-proxy:{TAG}": "proxy/Dockerfile",
    f"claude-code-proxy-operator:{TAG}": "operator/Dockerfile",
    f"claude-code-proxy-fake-upstream:{TAG}": "e2e/fake/Dockerfile",
}
OPERATOR_NS, NS, NAME = "claude-proxy-system", "e2e", "e2e-proxy"
FAKE = f"http://fake-upstream.{NS}.svc.cluster.local"
CLIENT_KEY = "e2e-client-key-of-the-kind-test"
MODEL = "claude-sonnet-4-6"


def run(*args: str, stdin: str | None = None, timeout: float = 600) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])} … failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = str(kubeconfig)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        return run(str(tool("kubectl")), "--kubeconfig", self.kubeconfig, *args, stdin=stdin, timeout=timeout)

    def helm(self, *args: str) -> str:
        return run(str(tool("helm")), "--kubeconfig", self.kubeconfig, *args)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    @contextmanager
    def port_forward(self, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward` to a local port; yields http://127.0.0.1:<port>."""
        args = [str(tool("kubectl")), "--kubeconfig", self.kubeconfig, "-n", NS, "port-forward", target, f":{port}"]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, f"port-forward said: {line!r}"
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            process.terminate()
            process.wait(10)


def eventually(check: Callable[[], Any], what: str, timeout: float = 120, every: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kind, docker = str(tool("kind")), str(tool("docker"))
    for image, dockerfile in IMAGES.items():
        run(docker, "build", "-f", str(ROOT / dockerfile), "-t", image, str(ROOT), timeout=1200)
    run(kind, "create", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s")
    try:
        for image in IMAGES:
            run(kind, "load", "docker-image", image, "--name", CLUSTER)
        yield Cluster(kubeconfig)
    finally:
        if not os.environ.get("E2E_KEEP"):
            run(kind, "delete", "cluster", "--name", CLUSTER)


def fake_upstream() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "fake-upstream"}
    ports = [("messages", 8080), ("oauth", 8081), ("state", 8082)]
    container = {
        "name": "fake",
        "image": f"claude-code-proxy-fake-upstream:{TAG}",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
        "readinessProbe": {"tcpSocket": {"port": "messages"}, "periodSeconds": 2},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "fake-upstream", "namespace": NS},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fake-upstream", "namespace": NS},
            "spec": {"selector": labels, "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports]},
        },
    ]


def secrets() -> list[dict[str, Any]]:
    expires_at_ms = int((time.time() + 30 * 60) * 1000)  # valid, and due for a refresh within 60 minutes
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "claude-credentials", "namespace": NS},
            "stringData": {".credentials.json": seed_credentials(expires_at_ms)},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "client-keys", "namespace": NS},
            "stringData": {"keys": CLIENT_KEY},
        },
    ]


def claude_proxy() -> dict[str, Any]:
    return {
        "apiVersion": "claudeproxy.dev/v1alpha1",
        "kind": "ClaudeProxy",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "auth": {
                "oauth": {
                    "seedSecretRef": {"name": "claude-credentials"},
                    "tokenURL": f"{FAKE}:8081/v1/oauth/token",
                    "refresh": {"before": 60, "suspend": True},  # the test triggers the refresh itself
                }
            },
            "upstream": {"baseURL": f"{FAKE}:8080"},
            "clientAuth": {"apiKeysSecretRef": {"name": "client-keys"}},
            "model": {"default": MODEL},
        },
    }


def chat(base_url: str) -> tuple[str, str]:
    """One non-streamed and one streamed completion through the Service; returns both answers."""
    client = OpenAI(base_url=f"{base_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": "Say hello"}]
    plain = client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content or ""
    chunks = client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return plain, streamed


def upstream_state(k8s: Cluster) -> dict[str, Any]:
    with k8s.port_forward("svc/fake-upstream", 8082) as url, urllib.request.urlopen(f"{url}/state", timeout=10) as r:
        return json.loads(r.read())


def test_helm_install_proxy_refresh_and_cleanup(cluster: Cluster) -> None:
    k8s = cluster

    # 1. The chart with its defaults (the default resync too): operator, CRD, RBAC.
    k8s.helm(
        "install", "claude-code-proxy", str(ROOT / "charts" / "claude-code-proxy"),
        "--namespace", OPERATOR_NS, "--create-namespace",
        "--set", f"operator.image.tag={TAG}", "--set", f"proxy.image.tag={TAG}",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    k8s.kubectl("wait", "--for=condition=Established", "crd/claudeproxies.claudeproxy.dev", "--timeout=60s")

    # 2. The fake upstream, the Secrets, the ClaudeProxy.
    k8s.kubectl("create", "namespace", NS)
    k8s.apply(*fake_upstream())
    k8s.kubectl("-n", NS, "rollout", "status", "deployment/fake-upstream", "--timeout=180s")
    k8s.apply(*secrets())
    k8s.apply(claude_proxy())
    k8s.kubectl("-n", NS, "wait", "--for=condition=Ready", f"claudeproxy/{NAME}", "--timeout=300s", timeout=330)
    status = k8s.get("-n", NS, "claudeproxy", NAME)["status"]
    assert status["endpoint"] == f"http://{NAME}.{NS}.svc.cluster.local/v1"
    assert status["seed"]["result"] == "copied"

    # 3. The Service answers the official SDK, streamed and not, with the seeded login (token serial 1).
    with k8s.port_forward(f"svc/{NAME}", 80) as url:
        plain, streamed = chat(url)
    assert plain and plain == streamed
    state = upstream_state(k8s)
    assert state["grants"] == 0 and state["lastTokenSerial"] == 1

    # 4. A refresh asked for by annotation (the CronJob's template, forced) rotates the token; the fake now refuses
    #    the old one. The annotation wakes the operator at once, well within the default resync interval.
    k8s.kubectl("-n", NS, "annotate", "claudeproxy", NAME, "--overwrite", "claudeproxy.dev/refresh-now=1")
    job = eventually(
        lambda: k8s.get("-n", NS, "claudeproxy", NAME)["status"].get("refreshNow", {}).get("job"),
        "the operator to start the refresh-now Job",
        timeout=20,
    )
    k8s.kubectl("-n", NS, "wait", "--for=condition=Complete", f"job/{job}", "--timeout=180s", timeout=200)
    logs = k8s.kubectl("-n", NS, "logs", f"job/{job}").splitlines()
    outcome = [json.loads(line) for line in logs if line.startswith("{") and '"command"' in line][-1]
    assert (outcome["command"], outcome["result"]) == ("refresh", "refreshed")
    assert upstream_state(k8s)["grants"] == 1

    # 5. The proxy picks up the rotated token from the volume without a restart.
    with k8s.port_forward(f"svc/{NAME}", 80) as url:
        assert chat(url)[0]
    assert upstream_state(k8s)["lastTokenSerial"] == 2
    eventually(
        lambda: k8s.get("-n", NS, "claudeproxy", NAME)["status"].get("lastRefresh", {}).get("result") == "refreshed",
        "status.lastRefresh to report the refresh",
    )

    # 6. Deleting the ClaudeProxy removes its children; the login's volume is retained (retainOnDelete default).
    k8s.kubectl("-n", NS, "delete", "claudeproxy", NAME, "--wait", "--timeout=120s", timeout=150)
    selector = f"app.kubernetes.io/instance={NAME}"
    kinds = "deployments,services,serviceaccounts,cronjobs,jobs,networkpolicies"
    eventually(lambda: k8s.get("-n", NS, kinds, "-l", selector)["items"] == [], "the children to be deleted")
    eventually(lambda: k8s.get("-n", NS, "jobs")["items"] == [], "the refresh Jobs to go with the ClaudeProxy")
    pvc = k8s.get("-n", NS, "pvc", f"{NAME}-credentials")
    assert not pvc["metadata"].get("ownerReferences")
    k8s.kubectl("-n", NS, "delete", "pvc", f"{NAME}-credentials", "--wait", "--timeout=60s")

    # 7. The chart uninstalls cleanly, even under a ClaudeProxy it still runs: the resource carries no finalizer, so
    #    deleting it once the operator is gone completes, and its children go by their ownerReferences.
    k8s.apply(claude_proxy())
    eventually(lambda: k8s.get("-n", NS, "serviceaccounts", "-l", selector)["items"] != [], "the operator to act")
    assert not k8s.get("-n", NS, "claudeproxy", NAME)["metadata"].get("finalizers")
    k8s.helm("uninstall", "claude-code-proxy", "--namespace", OPERATOR_NS, "--wait", "--timeout", "2m")
    assert k8s.get("-n", OPERATOR_NS, "deployments")["items"] == []
    k8s.kubectl("-n", NS, "delete", "claudeproxy", NAME, "--wait", "--timeout=60s", timeout=90)
    eventually(lambda: k8s.get("-n", NS, kinds, "-l", selector)["items"] == [], "the children to go without it")
    k8s.kubectl("-n", NS, "delete", "pvc", f"{NAME}-credentials", "--ignore-not-found", "--wait", "--timeout=60s")
