"""GET /readyz and /health through the real app and server: unready at once while draining, alive all the same."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import RECHECK_SECONDS, Credential, CredentialResolver
from claude_proxy.server.app import create_app
from tests.conftest import API_KEY, OAUTH_TOKEN, metric_samples, serve
from tests.fakes.anthropic import FakeAnthropic


def test_readyz_turns_unready_at_once_when_draining(fake: FakeAnthropic, tmp_path: Path) -> None:
    app = create_app(
        Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    )
    with serve(app) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        app.state.drain.begin()
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "the proxy is shutting down"
        assert httpx.get(f"{url}/health").status_code == 200  # still alive: in-flight work continues
        assert metric_samples(url)["proxy_draining"] == 1


def test_a_credentials_file_caught_mid_write_keeps_requests_served_and_readyz_says_so(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    creds = tmp_path / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    oauth = {"accessToken": OAUTH_TOKEN, "refreshToken": "sk-ant-ort01-r", "expiresAt": 4102444800000}
    creds.write_text(json.dumps({"claudeAiOauth": oauth}))
    creds.chmod(0o600)
    app = create_app(Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "HOME": str(tmp_path)}))
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    with serve(app) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
        assert "credentialNote" not in httpx.get(f"{url}/readyz").json()

        creds.write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-te')  # an outside writer, halfway
        time.sleep(RECHECK_SECONDS + 0.2)  # past the interval in which the proxy trusts its last look
        answer = httpx.post(f"{url}/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert fake.messages_requests[-1].headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        note = ready.json()["credentialNote"]
        assert "last good credential" in note and "not valid JSON" in note and "sk-ant-o" not in note

        creds.write_text(json.dumps({"claudeAiOauth": oauth}))  # the writer finished
        time.sleep(RECHECK_SECONDS + 0.2)
        assert "credentialNote" not in httpx.get(f"{url}/readyz").json()


def test_metrics_reads_the_credentials_file_off_the_event_loop(
    fake: FakeAnthropic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token expiry gauge is read while rendering, synchronously: the route looks at the file first in a worker
    thread, so the render finds the answer there and the event loop never reads or parses the file."""
    creds = tmp_path / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    creds.write_text(json.dumps({"claudeAiOauth": {"accessToken": OAUTH_TOKEN, "expiresAt": 4102444800000}}))
    creds.chmod(0o600)
    on_loop: list[bool] = []
    original = CredentialResolver._from_file

    def from_file(self: CredentialResolver) -> Credential:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return original(self)

    monkeypatch.setattr(CredentialResolver, "_from_file", from_file)
    app = create_app(Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "HOME": str(tmp_path)}))
    with serve(app) as url:
        time.sleep(RECHECK_SECONDS + 0.2)  # past the interval in which the proxy trusts its last look
        on_loop.clear()
        samples = metric_samples(url)
    assert on_loop and not any(on_loop), on_loop
    assert [key for key in samples if key.startswith("proxy_oauth_token_expiry_seconds")]


def test_readyz_stays_ready_past_the_token_expiry(fake: FakeAnthropic, tmp_path: Path) -> None:
    """Anthropic, not the clock, says whether a token is still good: the only replica keeps its endpoint, so clients
    get the proxy's answer (and its explanation, should Anthropic refuse) instead of connection errors."""
    creds = tmp_path / ".credentials.json"
    creds.write_text(json.dumps({"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "expiresAt": 1000}}))
    settings = {"ANTHROPIC_BASE_URL": fake.url, "CLAUDE_CREDENTIALS_PATH": str(creds), "HOME": str(tmp_path)}
    with serve(create_app(Settings.from_env(settings))) as url:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready" and body["expired"] is True
        assert body["expiresAt"] == "1970-01-01T00:00:01Z"
        assert "sk-ant" not in ready.text
