"""Exactly the API access the operator's handlers use, for rendering its (Cluster)Role and for testing it."""

from __future__ import annotations

from typing import Any

# One rule per API group and resource set, verbs sorted; core `events` is where kopf posts Events.
RULES: list[dict[str, Any]] = [
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies"], "verbs": ["get", "list", "patch", "watch"]},
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies/status"], "verbs": ["get", "patch"]},
    # ownerReferences with blockOwnerDeletion need update on the owner's finalizers subresource.
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims", "serviceaccounts", "services"],
        "verbs": ["create", "delete", "get", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["create", "delete", "get", "list", "patch", "watch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["create", "delete", "get", "patch"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["create", "delete", "get", "patch"],
    },
]
