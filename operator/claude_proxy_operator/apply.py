"""What server-side apply leaves to the operator: knowing when a child needs no write at all, and quantities.

The API server merges what the operator applies and removes what it stops applying (server-side apply, `kube`).
To keep an unchanged cluster free of writes, each applied object carries a digest of what the operator last
applied to it; when the newly desired object has the same digest, nothing is sent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

APPLIED_DIGEST = "claudeproxy.dev/applied-digest"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_FACTORS = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip


def digest(desired: Mapping[str, Any]) -> str:
    text = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def with_digest(desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` with the annotation recording its digest: the body to apply."""
    body = copy.deepcopy(dict(desired))
    body.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_DIGEST] = digest(desired)
    return body


def unchanged(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when `live` was applied from exactly `desired` (so applying again would change nothing)."""
    if live is None:
        return False
    annotations = live.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(APPLIED_DIGEST) == digest(desired))


def quantity(value: str) -> float:
    """A Kubernetes quantity (`64Mi`, `1G`, `500`) in plain units."""
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a storage quantity: {value!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]
