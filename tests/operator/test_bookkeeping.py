"""kopf's bookkeeping under a prefix of its own: the user's `claudeproxy.dev/refresh-now` wakes the operator at once,
at the default resync interval, also on a resource that an earlier release marked (in-process API server)."""

from __future__ import annotations

import json
from typing import Any

import kmock
import pytest

from claude_proxy_operator import bookkeeping, builders
from claude_proxy_operator.config import Config
from claude_proxy_operator.kube import CLAUDE_PROXIES, SECRETS
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    NS,
    OAUTH_SPEC,
    finish_job,
    outcome_line,
    proxy_body,
    seed_job,
)

DEFAULT_RESYNC = Config.resync_seconds
OLD_MARKER = "claudeproxy.dev/kopf-managed"
OLD_DIFFBASE = "claudeproxy.dev/last-handled-configuration"
NEW_DIFFBASE = f"{bookkeeping.PREFIX}/{bookkeeping.DIFFBASE_KEY}"


def test_the_old_bookkeeping_is_removed_and_the_handled_configuration_carried_over() -> None:
    annotations = {
        OLD_MARKER: "yes",
        OLD_DIFFBASE: '{"spec":{}}\n',
        "claudeproxy.dev/build_registry.-locals-.converge": '{"started":"x"}',
        builders.REFRESH_NOW_ANNOTATION: "keep me",
        "example.com/other": "keep me too",
    }
    patch = bookkeeping.migration_patch(annotations)
    assert patch == {
        "metadata": {
            "annotations": {
                OLD_MARKER: None,
                OLD_DIFFBASE: None,
                "claudeproxy.dev/build_registry.-locals-.converge": None,
                NEW_DIFFBASE: '{"spec":{}}\n',
                f"{bookkeeping.PREFIX}/kopf-managed": "yes",
            }
        }
    }


def test_a_resource_without_the_old_marker_needs_no_migration() -> None:
    assert bookkeeping.migration_patch({builders.REFRESH_NOW_ANNOTATION: "x"}) is None
    assert bookkeeping.migration_patch(None) is None
    # The new diffbase is never overwritten by the old one.
    patch = bookkeeping.migration_patch({OLD_MARKER: "yes", OLD_DIFFBASE: "old", NEW_DIFFBASE: "new"})
    assert patch == {"metadata": {"annotations": {OLD_MARKER: None, OLD_DIFFBASE: None}}}


def _refresh_now_jobs(cluster: Cluster) -> list[str]:
    return [
        str(body["metadata"]["name"])
        for resource, body in cluster.applies
        if resource == kmock.resource("batch/v1/jobs")
        and str(body.get("metadata", {}).get("name", "")).startswith("p-refresh-now-")
    ]


async def _seeded_proxy(api: Api, body: dict[str, Any]) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, body)
    job = await seed_job(api, "p")
    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )

    async def seeded() -> bool:
        obj = await api.get(CLAUDE_PROXIES, NS, "p")
        return bool(((obj or {}).get("status") or {}).get("seed"))

    await eventually(seeded, what="the seed in status")


async def _one_refresh_now_job(cluster: Cluster) -> list[str]:
    async def found() -> list[str] | None:
        return _refresh_now_jobs(cluster) or None

    # Well within the default resync interval: only a watched event can have started it.
    return await eventually(found, timeout=8.0, what="a refresh-now Job")


@pytest.mark.resync(DEFAULT_RESYNC)
async def test_the_refresh_now_annotation_acts_at_once_at_the_default_resync(api: Api, operator: Cluster) -> None:
    await _seeded_proxy(api, proxy_body("p", OAUTH_SPEC))
    assert _refresh_now_jobs(operator) == []
    await api.patch(CLAUDE_PROXIES, NS, "p", {"metadata": {"annotations": {builders.REFRESH_NOW_ANNOTATION: "now"}}})
    assert len(await _one_refresh_now_job(operator)) == 1
    annotations = (await api.get(CLAUDE_PROXIES, NS, "p") or {})["metadata"]["annotations"]
    assert NEW_DIFFBASE in annotations
    assert OLD_MARKER not in annotations and OLD_DIFFBASE not in annotations


@pytest.mark.resync(DEFAULT_RESYNC)
async def test_a_resource_marked_by_an_earlier_release_is_migrated_then_acts_at_once(
    api: Api, operator: Cluster
) -> None:
    body = proxy_body("p", OAUTH_SPEC)
    handled = {"spec": OAUTH_SPEC}
    body["metadata"]["annotations"] = {OLD_MARKER: "yes", OLD_DIFFBASE: json.dumps(handled) + "\n"}
    await _seeded_proxy(api, body)

    async def migrated() -> dict[str, str] | None:
        annotations = ((await api.get(CLAUDE_PROXIES, NS, "p")) or {})["metadata"].get("annotations") or {}
        return annotations if OLD_MARKER not in annotations else None

    annotations = await eventually(migrated, what="the old marker removed")
    assert OLD_DIFFBASE not in annotations
    assert json.loads(annotations[NEW_DIFFBASE])["spec"] == OAUTH_SPEC
    await api.patch(CLAUDE_PROXIES, NS, "p", {"metadata": {"annotations": {builders.REFRESH_NOW_ANNOTATION: "now"}}})
    assert len(await _one_refresh_now_job(operator)) == 1
