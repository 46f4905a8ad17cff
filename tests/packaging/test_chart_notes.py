"""The Helm chart's NOTES.txt: the endpoint, how to seed a login, how to create an instance, and a client key read
back and sent as a bearer token, each checked against what it describes."""

from __future__ import annotations

import re
import subprocess

import pytest

from claude_proxy_operator import builders
from tests.packaging import helm
from tests.packaging.chart_support import instance
from tests.packaging.helm import NAMESPACE, RELEASE


def notes(values: dict[str, str]) -> str:
    result = helm.run(
        "install", RELEASE, str(helm.CHART), "--dry-run=client", "--namespace", NAMESPACE, *helm.set_args(values)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize(("port", "endpoint"), [("80", "http://p.team.svc.cluster.local/v1"),
                                                ("8080", "http://p.team.svc.cluster.local:8080/v1")])  # fmt: skip
def test_notes_give_rockbot_the_endpoint(port: str, endpoint: str) -> None:
    text = notes(instance("apiKey", **{"instance.name": "p", "instance.service.port": port}))
    assert re.search(rf'endpoint: "{re.escape(endpoint)}"', text), text
    assert "kubectl -n team create secret generic anthropic-api-key" in text
    # The endpoint NOTES gives is the one the operator reports in status.
    from claude_proxy_operator.builders import endpoint as status_endpoint

    assert status_endpoint("p", "team", int(port)) == endpoint


def test_notes_tell_how_to_seed_a_login() -> None:
    text = notes(instance("oauth"))
    assert "claude auth login" in text
    assert "--from-file=.credentials.json=" in text and "create secret generic claude-credentials" in text
    assert "claude-code-proxy-refresh" in text
    annotate = f"kubectl -n team annotate claudeproxy claude-code-proxy --overwrite {builders.REFRESH_NOW_ANNOTATION}="
    assert annotate in text


def test_notes_without_instance_show_how_to_create_one() -> None:
    text = notes({})
    assert "kind: ClaudeProxy" in text and "status.endpoint" in text
    assert "name: claude-code-proxy" in text and "http://claude-code-proxy.<namespace>.svc.cluster.local/v1" in text


def test_notes_give_rockbot_the_original_proxys_configuration_unchanged() -> None:
    """The original proxy's README configures RockBot with exactly these three values; the chart's default instance,
    installed in namespace rockbot, must be reachable by them."""
    result = helm.run(
        "install", RELEASE, str(helm.CHART), "--dry-run=client", "--namespace", "rockbot",
        *helm.set_args(instance("apiKey")),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("NOTES:", 1)[1]
    assert 'endpoint: "http://claude-code-proxy.rockbot.svc.cluster.local/v1"' in text
    assert 'apiKey: "unused"' in text
    assert 'modelId: "claude-sonnet-4-6"' in text


@pytest.mark.parametrize("key", ["keys", "client.keys"])
def test_notes_read_back_the_client_key_and_send_it_as_bearer(key: str) -> None:
    values = instance("apiKey", **{"instance.clientAuth.secretName": "ck", "instance.clientAuth.key": key})
    text = notes(values)
    [read_back] = [line.strip() for line in text.splitlines() if line.strip().startswith("kubectl -n team get secret")]
    # The same command against the Secret NOTES says to create, built offline by kubectl itself.
    create = f"{helm.kubectl_binary()} create secret generic ck --from-literal={key}=first-key,second-key"
    command = read_back.replace("kubectl -n team get secret ck", f"{create} --dry-run=client", 1)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "first-key"), result.stderr
    assert f'KEY="$({read_back})"' in text
    assert 'curl http://localhost:8080/v1/chat/completions -H "Authorization: Bearer $KEY"' in text


def test_notes_without_client_keys_still_send_a_bearer_header() -> None:
    text = notes(instance("apiKey"))
    assert "KEY=unused" in text and '-H "Authorization: Bearer $KEY"' in text
    assert "get secret" not in text
