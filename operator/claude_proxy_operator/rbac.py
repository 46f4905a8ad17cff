"""Exactly the API access the operator uses, for rendering its ClusterRole (or Role) and for testing it.

The operator tests check every request the running operator makes against these rules (`tests/operator/conftest.py`),
and that each rule is used (`tests/operator/test_rbac.py`). Children are written by server-side apply: `patch`, plus
`create` for the apply that creates one (the API server authorizes that as a create too). The one rule no request
exercises is `claudeproxies/finalizers: update`: the API server demands it of whoever sets `blockOwnerDeletion` in an
ownerReference (kopf.adopt does).
"""

from __future__ import annotations

from typing import Any

RULES: list[dict[str, Any]] = [
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies"], "verbs": ["get", "list", "patch", "watch"]},
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies/status"], "verbs": ["patch"]},
    {"apiGroups": ["claudeproxy.dev"], "resources": ["claudeproxies/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["serviceaccounts", "services"], "verbs": ["create", "get", "patch"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create", "delete", "get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "get", "list", "patch", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list", "patch", "watch"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["create", "delete", "get", "patch"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["create", "delete", "get", "patch"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["create", "delete", "get", "patch"]},
]

UNEXERCISED = {("claudeproxy.dev", "claudeproxies/finalizers", "update")}


def permissions() -> set[tuple[str, str, str]]:
    """The rules flattened to (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
