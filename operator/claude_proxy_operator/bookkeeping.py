"""Where kopf keeps its bookkeeping on a ClaudeProxy, and the move from where earlier releases kept it.

kopf stores the last handled spec and its handlers' progress in annotations under one prefix, and marks that prefix
with `<prefix>/kopf-managed`. It then ignores every annotation under a marked prefix when it decides whether a
resource changed, so that two kopf operators do not wake each other up. Earlier releases kept the bookkeeping under
`claudeproxy.dev`, the prefix of the user's own annotations, so setting `claudeproxy.dev/refresh-now` woke no handler
and waited for the resync loop. The bookkeeping now lives under `operator.claudeproxy.dev` (a prefix starting with
`kopf.` would not be marked by kopf, and its progress annotations would then count as changes of the resource).

Resources written by an earlier release still carry the old marker, which would keep hiding the user's annotations:
`migration_patch` removes it and every other annotation the old bookkeeping left, and carries the last handled
configuration over to the new key, so kopf does not take an existing resource for a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "operator.claudeproxy.dev"
DIFFBASE_KEY = "last-handled-configuration"
MARKER = "kopf-managed"
LEGACY_PREFIX = "claudeproxy.dev"
# The user's own annotations under the legacy prefix: never bookkeeping, never removed.
USER_ANNOTATIONS = frozenset({f"{LEGACY_PREFIX}/refresh-now"})


def _legacy_keys(annotations: Mapping[str, str]) -> list[str]:
    """Every annotation under the legacy prefix but the user's: on a ClaudeProxy the operator never wrote any other
    than kopf's (the marker, the last handled configuration, handler progress, whose keys kopf may have hashed)."""
    return [key for key in annotations if key.startswith(f"{LEGACY_PREFIX}/") and key not in USER_ANNOTATIONS]


def migration_patch(annotations: Mapping[str, str] | None) -> dict[str, Any] | None:
    """A JSON merge patch of `metadata.annotations` that moves the old bookkeeping out of the user's prefix, or None
    when there is none left."""
    annotations = annotations or {}
    if f"{LEGACY_PREFIX}/{MARKER}" not in annotations:
        return None
    changes: dict[str, str | None] = {key: None for key in _legacy_keys(annotations)}
    old_diffbase = annotations.get(f"{LEGACY_PREFIX}/{DIFFBASE_KEY}")
    if old_diffbase is not None and f"{PREFIX}/{DIFFBASE_KEY}" not in annotations:
        changes[f"{PREFIX}/{DIFFBASE_KEY}"] = old_diffbase
        changes[f"{PREFIX}/{MARKER}"] = "yes"
    return {"metadata": {"annotations": changes}}
