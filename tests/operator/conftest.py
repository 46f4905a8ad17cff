"""Fixtures that run the real operator (kopf, the handlers, the reconciler) against the in-process API."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
from lightkube import KubeConfig

from claude_proxy_operator import rbac
from claude_proxy_operator.config import Config
from claude_proxy_operator.handlers import build_registry, configure
from claude_proxy_operator.kube import Kube
from claude_proxy_operator.metrics import OperatorMetrics
from tests.operator.cluster import (
    RESOURCES,
    TEST_CLIENT,
    Api,
    Cluster,
    operator_permissions,
)

IMAGE = "claude-code-proxy:test"
RESYNC_SECONDS = 0.4
HANDLED = "operator.claudeproxy.dev/last-handled-configuration"


class Readyz:
    """A real HTTP server answering GET /<namespace>/<name>/readyz as that proxy's Service would: `logins` holds
    the `login` object per proxy (absent: 404, as from a proxy that gives no verdict)."""

    def __init__(self) -> None:
        self.logins: dict[tuple[str, str], dict[str, Any]] = {}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                parts = self.path.strip("/").split("/")
                login = outer.logins.get((parts[0], parts[1])) if len(parts) == 3 else None
                body = json.dumps({"status": "ready", "login": login}).encode() if login else b"{}"
                self.send_response(200 if login else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/{{namespace}}/{{name}}/readyz"


@pytest.fixture
def readyz() -> Iterator[Readyz]:
    served = Readyz()
    thread = threading.Thread(target=served.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Cluster, str]]:
    async with Cluster() as emulator, kmock.Server(emulator) as server:
        for key, info in RESOURCES.items():
            emulator.resources[key] = info
        yield emulator, str(server.url)


@pytest.fixture
async def api(cluster: tuple[Cluster, str]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(headers={"User-Agent": TEST_CLIENT}) as session:
        yield Api(cluster[1], session)


async def _quiesce(emulator: Cluster) -> None:
    """Let kopf finish handling the last spec change before stopping it, so a test's end never cuts a pass short and
    the RBAC checks below see every request the pass needed."""

    def settled() -> bool:
        for (resource, _ns, _name), obj in list(emulator.objects.items()):
            if obj.deleted or resource.plural != "claudeproxies":
                continue
            handled = (obj.get("metadata", {}).get("annotations") or {}).get(HANDLED)
            if handled is None or json.loads(handled).get("spec") != obj.raw.get("spec"):
                return False
        return True

    for _ in range(100):
        if settled():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)


@pytest.fixture
def operator_metrics() -> OperatorMetrics:
    """The metrics the `operator` fixture's reconciler records into."""
    return OperatorMetrics()


@pytest.fixture
async def operator(
    cluster: tuple[Cluster, str], readyz: Readyz, request: pytest.FixtureRequest, operator_metrics: OperatorMetrics
) -> AsyncIterator[Cluster]:
    emulator, url = cluster

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url.rstrip("/"), scheme="Bearer", token="test-token")

    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url.rstrip("/")}}],
        "users": [{"name": "operator", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}],
        "current-context": "emulator",
    }
    kube = Kube(KubeConfig.from_dict(kubeconfig))
    resync = request.node.get_closest_marker("resync")
    watch = request.node.get_closest_marker("login_watch")
    config = Config(
        default_image=IMAGE,
        resync_seconds=resync.args[0] if resync else RESYNC_SECONDS,
        login_seconds=watch.args[0] if watch else 0.0,
        login_url=readyz.url,
        login_timeout=1.0,
        heal_backoff=(1.0, 2.0),
    )
    registry = build_registry(config, login=login, kube=kube, metrics=operator_metrics)
    settings = kopf.OperatorSettings()
    configure(settings)
    settings.networking.error_backoffs = [0.1, 0.2]
    # kopf gets a thread and event loop of its own: on stopping, it cancels every task started in its loop after it.
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry, settings=settings, clusterwide=True, standalone=True,
                    stop_flag=stop, ready_flag=ready,
                )
            )  # fmt: skip
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"
    yield emulator
    await _quiesce(emulator)
    stop.set()
    await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive(), "the operator did not stop"
    assert not failure, failure
    made = operator_permissions(emulator)
    assert made - rbac.permissions() == set(), "the operator made requests its RBAC rules do not allow"
    marker = request.node.get_closest_marker("uses_rbac")
    if marker is not None:
        assert set(marker.args[0]) - made == set(), "RBAC rules this test is marked as using went unused"
