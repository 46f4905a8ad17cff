"""The core/v1 Events the operator posts about a ClaudeProxy, through its own client, from every reconcile pass.

Posting is best effort, as Events are in Kubernetes: a refused or failed post is logged and the pass goes on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from claude_proxy_operator import status

COMPONENT = "claude-proxy-operator"
MAX_MESSAGE = 1024  # the API server refuses longer Event messages


def event(owner: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about `owner` (a ClaudeProxy as read from the API): `kind` is Normal or Warning."""
    meta = owner["metadata"]
    stamp = status.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME") or COMPONENT,
    }
