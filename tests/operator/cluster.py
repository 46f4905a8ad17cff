"""An in-process Kubernetes API for running the operator for real: kmock's KubernetesEmulator, plus the parts of an
API server it leaves out (uid, resourceVersion, generation, creationTimestamp, generateName, label selectors on lists,
garbage collection by ownerReferences), and a small client for the tests to act as user and as controllers."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import jsonpatch
import kmock

from claude_proxy_operator.kube import Resource

T = TypeVar("T")
# What the operator's requests needed, as RBAC (apiGroup, resource, verb), over the tests that ran it.
EXERCISED: set[tuple[str, str, str]] = set()
OPERATOR_TESTS_RUN: set[str] = set()
_versions = itertools.count(1)

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "claudeproxy.dev/v1alpha1/claudeproxies": kmock.ResourceInfo(
        kind="ClaudeProxy", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    ),
    # kopf's backbone: discovered even with scanning disabled.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs={"list", "watch"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"}
    ),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"}),
}  # fmt: skip
for _key, _kind in [
    ("v1/secrets", "Secret"), ("v1/pods", "Pod"), ("v1/services", "Service"),
    ("v1/serviceaccounts", "ServiceAccount"), ("v1/persistentvolumeclaims", "PersistentVolumeClaim"),
    ("apps/v1/deployments", "Deployment"), ("batch/v1/jobs", "Job"), ("batch/v1/cronjobs", "CronJob"),
    ("networking.k8s.io/v1/networkpolicies", "NetworkPolicy"),
]:  # fmt: skip
    RESOURCES[_key] = kmock.ResourceInfo(
        kind=_kind, namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    )


def permission(request: kmock.Request) -> tuple[str, str, str]:
    """The RBAC (apiGroup, resource, verb) an API request needs."""
    assert request.resource is not None
    resource = str(request.resource.plural) + (f"/{request.subresource}" if request.subresource else "")
    method = str(request.method.value).upper()
    if method == "GET":
        verb = "get" if request.name else ("watch" if request.params.get("watch") == "true" else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
    return str(request.resource.group or ""), resource, verb


def operator_permissions(cluster: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """Permissions used by requests the operator made (kopf's client), not those of the tests' own client; API
    discovery (/api, /apis/<group>/<version>) is open to every authenticated client and needs no rule."""
    return {
        permission(r)
        for r in cluster
        if r.resource is not None and r.resource.plural and "kopf" in r.headers.get("User-Agent", "")
    }


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class Cluster(kmock.KubernetesEmulator):
    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        if request.resource is not None and data is not None and request.action == kmock.action.CREATE:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("namespace", request.namespace)
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(_versions)),
                generation=1,
                creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        elif request.resource is not None and data is not None and request.action == kmock.action.UPDATE:
            current = self._current(request)
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(_versions))
            if current is not None and request.subresource is None and "spec" in data:
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        before = self._current(request) if request.name else None
        try:
            response = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:  # optimistic concurrency (kopf's finalizer patches)
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        if before is not None and self._current(request) is None:  # deleted now (finalizers, if any, released)
            await self._collect_garbage(before["metadata"]["uid"])
        if data is not None and request.action == kmock.action.CREATE:
            await self._collect_orphan(data)
        return response

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        if request.resource is None or not request.name:
            return None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    async def _collect_orphan(self, created: dict[str, Any]) -> None:
        """An object created with an owner that no longer exists is garbage at once (a late write after a delete)."""
        refs = created.get("metadata", {}).get("ownerReferences") or []
        if not refs:
            return
        alive = {obj.get("metadata", {}).get("uid") for obj in self.objects.values() if not obj.deleted}
        if not any(ref.get("uid") in alive for ref in refs):
            await self._collect_garbage(str(refs[0].get("uid")))

    async def _collect_garbage(self, uid: str) -> None:
        """Delete, transitively, every object whose ownerReferences name a deleted uid (background cascading)."""
        pending = [uid]
        while pending:
            owner = pending.pop()
            for (resource, _ns, _name), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                refs = obj.get("metadata", {}).get("ownerReferences") or []
                if any(ref.get("uid") == owner for ref in refs):
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
                    pending.append(raw["metadata"]["uid"])

    async def _serve_list(self, request: kmock.Request) -> Any:
        result: dict[str, Any] = await super()._serve_list(request)  # type: ignore[assignment]
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [item for item in result["items"] if _matches(item, selector)]
        return result


class Api:
    """The test's own client: it plays the user (kubectl) and the controllers a real cluster would run."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/")
        self.session = session

    async def _call(self, method: str, url: str, body: Any = None, ok_missing: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else None
        async with self.session.request(method, self.base + url, json=body, headers=headers) as resp:
            if ok_missing and resp.status == 404:
                return None
            assert resp.status < 400, f"{method} {url}: {resp.status} {await resp.text()}"
            return await resp.json()

    async def get(self, res: Resource, ns: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("GET", res.url(ns, name), ok_missing=True)
        return found

    async def list(self, res: Resource, ns: str) -> list[dict[str, Any]]:
        return list((await self._call("GET", res.url(ns)))["items"])

    async def create(self, res: Resource, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        created: dict[str, Any] = await self._call("POST", res.url(ns), body)
        return created

    async def patch(self, res: Resource, ns: str, name: str, patch: dict[str, Any], sub: str | None = None) -> Any:
        return await self._call("PATCH", res.url(ns, name, sub), patch)

    async def delete(self, res: Resource, ns: str, name: str) -> Any:
        return await self._call("DELETE", res.url(ns, name))


def secret_data(values: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 8.0, what: str = "") -> T:
    """Poll until `probe` returns something truthy; fail with its last answer otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or probe}: last answer {last!r}")
