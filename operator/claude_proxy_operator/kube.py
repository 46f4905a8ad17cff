"""The operator's own Kubernetes client: lightkube's AsyncClient, with plain dicts in and out.

kopf watches and runs the handlers; every read and write the reconciler makes (children, status, Events) goes
through this module. It logs in the usual way: the in-cluster service account when there is one, else
$KUBECONFIG or ~/.kube/config (lightkube's `KubeConfig.from_env`). Children are written by server-side apply
under the field manager `claude-proxy-operator`, forced: the operator owns the fields it sets, and a field it
stops setting is removed by the API server. Nothing here logs a request or response body (Secrets pass through).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core import resource as lk
from lightkube.generic_resource import GenericNamespacedResource, GenericNamespacedStatus
from lightkube.types import CascadeType, PatchType

from claude_proxy_operator.spec import GROUP, KIND, PLURAL, VERSION, Manifest

FIELD_MANAGER = "claude-proxy-operator"
# lightkube raises ApiError for an answer that is a Kubernetes Status, httpx's error for any other failed answer.
APIError = (ApiError, httpx.HTTPStatusError)


def status_code(exc: Exception) -> int:
    if isinstance(exc, ApiError):
        return int(getattr(exc.status, "code", 0) or 0)
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    return 0


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @cached_property
    def model(self) -> Any:
        """A lightkube resource class for this kind whose objects are dicts (not registered globally)."""
        info = lk.ApiInfo(
            resource=lk.ResourceDef(self.group, self.version, self.kind),
            plural=self.plural,
            verbs=["delete", "get", "list", "patch", "post", "watch"],
        )
        return type(self.kind, (GenericNamespacedResource,), {"_api_info": info})

    @cached_property
    def status_model(self) -> Any:
        info = lk.ApiInfo(
            resource=lk.ResourceDef(self.group, self.version, self.kind),
            parent=lk.ResourceDef(self.group, self.version, self.kind),
            plural=self.plural,
            verbs=["get", "patch"],
            action="status",
        )
        return type(f"{self.kind}Status", (GenericNamespacedStatus,), {"_api_info": info})


SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
SERVICES = Resource("", "v1", "services", "Service")
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
JOBS = Resource("batch", "v1", "jobs", "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
CLAUDE_PROXIES = Resource(GROUP, VERSION, PLURAL, KIND)


class Kube:
    """get / list / create / apply / merge-patch / delete, each namespaced, each returning plain dicts.

    The AsyncClient is made on first use, in the event loop that uses it; `config` defaults to the usual login."""

    def __init__(self, config: KubeConfig | None = None) -> None:
        self._config = config
        self._client: AsyncClient | None = None

    @property
    def client(self) -> Any:  # lightkube's overloads are typed for its own models; these are dicts
        if self._client is None:
            config = self._config or KubeConfig.from_env()
            self._client = AsyncClient(config=config, field_manager=FIELD_MANAGER, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, res: Resource, namespace: str, name: str) -> Manifest | None:
        try:
            found = await self.client.get(res.model, name, namespace=namespace)
        except APIError as exc:
            if status_code(exc) == 404:
                return None
            raise
        return dict(found)

    async def list(self, res: Resource, namespace: str, labels: Mapping[str, str]) -> list[Manifest]:
        return [dict(item) async for item in self.client.list(res.model, namespace=namespace, labels=dict(labels))]

    async def create(self, res: Resource, namespace: str, body: Manifest) -> Manifest:
        created = await self.client.create(res.model(body), namespace=namespace)
        return dict(created)

    async def apply(self, res: Resource, namespace: str, body: Manifest) -> Manifest:
        """Server-side apply of `body` (created when absent), forced, as field manager `claude-proxy-operator`."""
        applied = await self.client.patch(
            res.model,
            body["metadata"]["name"],
            body,
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        return dict(applied)

    async def patch(
        self, res: Resource, namespace: str, name: str, patch: Manifest, subresource: str | None = None
    ) -> Manifest:
        """A JSON merge patch (used for status, which the operator computes whole)."""
        model = res.status_model if subresource == "status" else res.model
        patched = await self.client.patch(model, name, patch, namespace=namespace, patch_type=PatchType.MERGE)
        return dict(patched)

    async def delete(self, res: Resource, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods go with it); False when it was already gone."""
        try:
            await self.client.delete(res.model, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        except APIError as exc:
            if status_code(exc) == 404:
                return False
            raise
        return True
