"""A small async Kubernetes client on top of kopf's own API session.

kopf already holds the credentials (in-cluster service account or kubeconfig), retries and timeouts; this module only
adds the handful of calls the reconciler makes. It is the one place that touches kopf's internal client, so a kopf
upgrade that moves it changes this file alone. Nothing here logs a request or response body (Secrets pass through).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kopf._cogs.clients import api as _api
from kopf._cogs.clients import errors as _errors

Obj = dict[str, Any]

NotFound = _errors.APINotFoundError
Conflict = _errors.APIConflictError
APIError = _errors.APIError


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def url(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        url = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            url += f"/{name}"
        if subresource is not None:
            url += f"/{subresource}"
        return url


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
CLAUDE_PROXIES = Resource("claudeproxy.dev", "v1alpha1", "claudeproxies", "ClaudeProxy")

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class Kube:
    """get / list / create / merge-patch / delete, each namespaced, each returning plain dicts."""

    def __init__(self, settings: kopf.OperatorSettings | None = None, logger: logging.Logger | None = None) -> None:
        self._settings = settings or kopf.OperatorSettings()
        self._logger = logger or logging.getLogger("claude_proxy_operator.kube")

    async def _call(
        self, method: str, url: str, payload: object | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        response = await _api.request(
            method,
            url,
            payload=payload,
            headers=dict(headers) if headers else None,
            settings=self._settings,
            logger=self._logger,
        )
        async with response:
            return await response.json()

    async def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        try:
            obj: Obj = await self._call("get", res.url(namespace, name))
        except NotFound:
            return None
        return obj

    async def list(self, res: Resource, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        query = urllib.parse.urlencode({"labelSelector": selector})
        found = await self._call("get", f"{res.url(namespace)}?{query}")
        return list(found.get("items") or [])

    async def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        created: Obj = await self._call("post", res.url(namespace), payload=body)
        return created

    async def patch(self, res: Resource, namespace: str, name: str, patch: Obj, subresource: str | None = None) -> Obj:
        patched: Obj = await self._call(
            "patch", res.url(namespace, name, subresource), payload=patch, headers=MERGE_PATCH
        )
        return patched

    async def delete(self, res: Resource, namespace: str, name: str) -> bool:
        """Delete with background propagation (a Job's pods go with it); False when it was already gone."""
        try:
            await self._call("delete", res.url(namespace, name) + "?propagationPolicy=Background")
        except NotFound:
            return False
        return True
