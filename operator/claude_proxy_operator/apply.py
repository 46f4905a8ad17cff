"""Create-or-patch that converges and leaves an unchanged object alone.

Each child carries the JSON of what the operator last applied to it (like `kubectl apply`). When the new desired
object serializes the same, nothing is written; otherwise one JSON merge patch is sent: the desired fields, plus a
null for every field the operator set before and no longer wants (so turning an option off really removes it).
Fields other writers own (server defaults, clusterIP, status) are never touched.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

LAST_APPLIED = "claudeproxy.dev/last-applied"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_FACTORS = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip


def serialize(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def last_applied(live: Mapping[str, Any] | None) -> str | None:
    if live is None:
        return None
    value = (live.get("metadata", {}).get("annotations") or {}).get(LAST_APPLIED)
    return value if isinstance(value, str) else None


def record(desired: Mapping[str, Any], managed: Mapping[str, Any] | None = None) -> Obj:
    """`desired` with the annotation recording `managed` (the part later patches own; by default all of it)."""
    body = copy.deepcopy(dict(desired))
    annotations = body.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[LAST_APPLIED] = serialize(managed if managed is not None else desired)
    return body


def removals(old: Any, new: Any) -> Any:
    """`new`, plus None for each key of `old` that `new` lacks, recursively through objects (lists are atoms)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return copy.deepcopy(new)
    merged: Obj = {key: removals(old.get(key), value) for key, value in new.items()}
    for key in old:
        if key not in new:
            merged[key] = None
    return merged


def patch_for(live: Mapping[str, Any], managed: Mapping[str, Any]) -> Obj | None:
    """The merge patch that brings `live` to `managed`, or None when it already was applied exactly so."""
    text = serialize(managed)
    previous = last_applied(live)
    if previous == text:
        return None
    old = json.loads(previous) if previous else {}
    patch: Obj = removals(old, managed)
    patch.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = text
    return patch


def quantity(value: str) -> float:
    """A Kubernetes quantity (`64Mi`, `1G`, `500`) in plain units."""
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a storage quantity: {value!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]
