"""The emulator's server-side apply (tests/operator/cluster.py), driven through the operator's own client
(`Kube.apply`, lightkube): create when absent, merge, remove what a manager stops applying, keep what another
applier owns, conflicts without force, a field manager required."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from lightkube import KubeConfig

from claude_proxy_operator.kube import FIELD_MANAGER, SERVICE_ACCOUNTS, Kube
from tests.operator.cluster import APPLY_PATCH, Api, Cluster, resource_path

NS = "apply"


@pytest.fixture
async def kube(cluster: tuple[Cluster, str]) -> AsyncIterator[Kube]:
    url = cluster[1].rstrip("/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
        "current-context": "e",
    }
    client = Kube(KubeConfig.from_dict(config))
    yield client
    await client.close()


def _account(labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "labels": labels}, **extra}


async def _apply_as(cluster: tuple[Cluster, str], manager: str, body: dict[str, Any], force: bool) -> int:
    params = {"fieldManager": manager, **({"force": "true"} if force else {})}
    async with aiohttp.ClientSession() as session:
        url = cluster[1].rstrip("/") + resource_path(SERVICE_ACCOUNTS, NS, "sa")
        headers = {"Content-Type": APPLY_PATCH}
        async with session.patch(url, params=params, data=json.dumps(body), headers=headers) as resp:
            return resp.status


async def test_apply_creates_then_merges_and_removes_what_is_no_longer_applied(kube: Kube, api: Api) -> None:
    created = await kube.apply(SERVICE_ACCOUNTS, NS, _account({"a": "1", "b": "2"}, automountServiceAccountToken=False))
    assert created["metadata"]["uid"] and created["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert created["metadata"]["managedFields"] == [{"manager": FIELD_MANAGER, "operation": "Apply"}]
    # Someone else adds a label by a plain patch: not the operator's field, so it stays.
    await api.patch(SERVICE_ACCOUNTS, NS, "sa", {"metadata": {"labels": {"other": "x"}}})
    updated = await kube.apply(SERVICE_ACCOUNTS, NS, _account({"a": "3"}))
    assert updated["metadata"]["labels"] == {"a": "3", "other": "x"}  # b: no longer applied, removed
    assert "automountServiceAccountToken" not in updated
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]


async def test_another_appliers_fields_conflict_unless_forced_and_are_kept(
    kube: Kube, cluster: tuple[Cluster, str], api: Api
) -> None:
    await kube.apply(SERVICE_ACCOUNTS, NS, _account({"a": "1"}))
    assert await _apply_as(cluster, "someone", _account({"a": "2", "theirs": "y"}), force=False) == 409
    assert await _apply_as(cluster, "someone", _account({"theirs": "y"}), force=False) == 200
    both = await api.get(SERVICE_ACCOUNTS, NS, "sa") or {}
    assert both["metadata"]["labels"] == {"a": "1", "theirs": "y"}
    assert {m["manager"] for m in both["metadata"]["managedFields"]} == {FIELD_MANAGER, "someone"}
    # The operator stops applying its label: the other applier's label is untouched.
    after = await kube.apply(SERVICE_ACCOUNTS, NS, _account({}))
    assert after["metadata"]["labels"] == {"theirs": "y"}
    # Forced, the operator takes a field over.
    taken = await kube.apply(SERVICE_ACCOUNTS, NS, _account({"theirs": "mine"}))
    assert taken["metadata"]["labels"] == {"theirs": "mine"}


async def test_apply_needs_a_field_manager(cluster: tuple[Cluster, str]) -> None:
    async with aiohttp.ClientSession() as session:
        url = cluster[1].rstrip("/") + resource_path(SERVICE_ACCOUNTS, NS, "sa")
        body = json.dumps(_account({}))
        async with session.patch(url, data=body, headers={"Content-Type": APPLY_PATCH}) as resp:
            assert resp.status == 400
