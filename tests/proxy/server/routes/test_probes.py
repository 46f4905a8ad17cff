"""GET /readyz and /health through the real app and server: unready at once while draining, alive all the same."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from tests.conftest import API_KEY, metric_samples, serve
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
