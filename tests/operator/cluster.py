"""An in-process Kubernetes API for running the operator for real: kmock's KubernetesEmulator, plus the parts of an
API server it leaves out (uid, resourceVersion, generation, creationTimestamp, generateName, label selectors on lists,
garbage collection by ownerReferences, server-side apply), and a small client for the tests to act as user and as
controllers.

Server-side apply (PATCH with Content-Type application/apply-patch+yaml), as far as modelled here: `fieldManager` is
required; the object is created when absent; otherwise the applied fields are merged into it, and the fields this
manager applied before and no longer applies are removed, unless another applier also applied them. The fields each
manager applied are tracked per object (leaf paths, a list being one leaf), and `metadata.managedFields` names the
managers (operation Apply) without their fieldsV1 sets. A field another applier owns with a different value is a 409
Conflict unless `force=true`. Not modelled: ownership taken by Update (merge/JSON patch, PUT) writers, list merging
by key (x-kubernetes-list-type map/set: a list is replaced whole), apply to subresources, dry runs.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import jsonpatch
import kmock
import yaml

from claude_proxy_operator.kube import Resource

T = TypeVar("T")
TEST_CLIENT = "claude-proxy-tests"  # the User-Agent of the tests' own client; every other request is the operator's
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
    ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget"),
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


def operator_permissions(cluster: Cluster) -> set[tuple[str, str, str]]:
    """Permissions used by requests the operator made (kopf's and its own client), not those of the tests' own
    client; API discovery (/api, /apis/<group>/<version>) is open to every authenticated client and needs no rule.
    A server-side apply that creates its object needs `create` as well as `patch`, as on a real API server."""
    found: set[tuple[str, str, str]] = set()
    for r in cluster:
        if r.resource is None or not r.resource.plural or r.headers.get("User-Agent") == TEST_CLIENT:
            continue
        found.add(permission(r))
        if r.id in cluster.apply_created:
            group, resource, _ = permission(r)
            found.add((group, resource, "create"))
    return found


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


APPLY_PATCH = "application/apply-patch+yaml"
Path = tuple[str, ...]
_IDENTITY: set[Path] = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def _leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf of an applied object by path; a list (or an empty map) is one leaf."""
    if isinstance(obj, dict) and obj:
        found: dict[Path, Any] = {}
        for key, value in obj.items():
            found.update(_leaves(value, (*prefix, str(key))))
        return found
    return {prefix: obj}


def _lookup(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Delete one field, and the maps deleting it leaves empty (never a top-level section such as spec)."""
    chain = [obj]  # chain[d] is the map at path[:d]
    for key in path[:-1]:
        nxt = chain[-1].get(key)
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    chain[-1].pop(path[-1], None)
    for depth in range(len(chain) - 1, 1, -1):
        if chain[depth]:
            break
        chain[depth - 1].pop(path[depth - 1], None)


def _merge(base: Any, applied: Any) -> Any:
    if isinstance(base, dict) and isinstance(applied, dict):
        merged = dict(base)
        for key, value in applied.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(applied)


def _merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch that turns `old` into `new`."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {
        key: _merge_patch(old.get(key), value) for key, value in new.items() if old.get(key) != value
    }
    patch.update({key: None for key in old if key not in new})
    return patch


def _with_data(request: kmock.Request, data: Any) -> kmock.Request:
    """The same request (kmock routes by identity) with its body replaced by what the apply amounts to."""
    object.__setattr__(request, "data", data)  # kmock's Request is a frozen attrs class
    return request


class Cluster(kmock.KubernetesEmulator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (resource, namespace, name) -> field manager -> the leaf paths it applied last
        self.applied: dict[tuple[Any, str | None, str | None], dict[str, set[Path]]] = {}
        self.apply_created: set[int] = set()  # ids of the apply requests that created their object
        self.applies: list[tuple[Any, dict[str, Any]]] = []  # (resource, object) of every apply, as it was sent

    async def _as_apply(self, request: kmock.Request) -> kmock.Request:
        """A server-side apply, turned into the create or merge patch it amounts to (see the module docstring)."""
        manager = request.params.get("fieldManager")
        if not manager:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="fieldManager is required for apply")
        applied = request.data if isinstance(request.data, dict) else yaml.safe_load(request.text)
        if not isinstance(applied, dict) or applied.get("metadata", {}).get("name") != request.name:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="the applied object's name differs")
        self.applies.append((request.resource, copy.deepcopy(applied)))
        key = (request.resource, request.namespace, request.name)
        leaves = {path: value for path, value in _leaves(applied).items() if path not in _IDENTITY}
        current = self._current(request)
        owners = self.applied.setdefault(key, {}) if current is not None else {}
        if current is None:
            self.applied[key] = owners
        others = {path for name, paths in owners.items() if name != manager for path in paths}
        if current is not None and request.params.get("force") != "true":
            clashes = [p for p in leaves if p in others and _lookup(current, p) != leaves[p]]
            if clashes:
                fields = ", ".join(".".join(p) for p in clashes)
                raise kmock.KubernetesError(status=409, reason="Conflict", message=f"Apply failed: conflicts: {fields}")
        if request.params.get("force") == "true":
            for name, paths in owners.items():
                if name != manager:
                    paths.difference_update(leaves)
        previous = owners.get(manager, set())
        owners[manager] = set(leaves)
        entries = [{"manager": name, "operation": "Apply"} for name in sorted(owners) if owners[name]]
        if current is None:  # created here; the request goes on as an empty patch, which answers the object
            body = copy.deepcopy(applied)
            meta = body.setdefault("metadata", {})
            meta["managedFields"] = entries
            self._stamp_new(meta, request.namespace)
            async with self._lock:
                if key in self.objects:
                    self.objects[key].create(body)
                else:
                    self.objects[key] = body
                raw = self.objects[key].raw
            await self._buses[key[0]].put({"type": "ADDED", "object": raw})
            await self._collect_orphan(body)
            self.apply_created.add(request.id)
            return _with_data(request, {})
        new = _merge(current, applied)
        kept = set(leaves) | others
        for path in previous - kept:
            if not any(other[: len(path)] == path for other in kept):  # not a map something kept lives in
                _remove(new, path)
        new.setdefault("metadata", {})["managedFields"] = entries
        return _with_data(request, _merge_patch(current, new))

    async def _handle(self, request: kmock.Request) -> Any:
        if str(request.method.value).upper() == "PATCH" and request.headers.get("Content-Type", "").startswith(
            APPLY_PATCH
        ):
            request = await self._as_apply(request)
        data = request.data if isinstance(request.data, dict) else None
        if request.resource is not None and data is not None and request.action == kmock.action.CREATE:
            self._stamp_new(data.setdefault("metadata", {}), request.namespace)
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

    @staticmethod
    def _stamp_new(meta: dict[str, Any], namespace: str | None) -> None:
        """What the API server sets on a new object."""
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("namespace", namespace)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(next(_versions)),
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

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


def resource_path(res: Resource, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """The API path of a namespaced collection, or of one object (and one of its subresources) in it."""
    root = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    path = f"{root}/namespaces/{namespace}/{res.plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


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
        found: dict[str, Any] | None = await self._call("GET", resource_path(res, ns, name), ok_missing=True)
        return found

    async def list(self, res: Resource, ns: str) -> list[dict[str, Any]]:
        return list((await self._call("GET", resource_path(res, ns)))["items"])

    async def create(self, res: Resource, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        created: dict[str, Any] = await self._call("POST", resource_path(res, ns), body)
        return created

    async def patch(self, res: Resource, ns: str, name: str, patch: dict[str, Any], sub: str | None = None) -> Any:
        return await self._call("PATCH", resource_path(res, ns, name, sub), patch)

    async def delete(self, res: Resource, ns: str, name: str) -> Any:
        return await self._call("DELETE", resource_path(res, ns, name))


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
