"""What the chart's tests share: the auth modes, the values that enable the instance, the Kubernetes schema check of
rendered objects, and the operator's container in a render."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from tests.packaging.helm import one

K8S = kubernetes_validate.latest_version()
MODES = ("apiKey", "accessToken", "oauth")


def instance(mode: str, **more: str) -> dict[str, str]:
    return {"instance.enabled": "true", "instance.auth.mode": mode, **more}


def validate_k8s(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] != "ClaudeProxy":
            kubernetes_validate.validate(obj, K8S, strict=True)


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole that lends its rules to the default view/edit/admin roles (not the operator's own)."""
    return any(label.startswith(AGGREGATE) for label in (role["metadata"].get("labels") or {}))


def operator_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [role] = [obj for obj in objects if obj["kind"] == "ClusterRole" and not aggregated(obj)]
    return role
