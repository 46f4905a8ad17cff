"""GET /readyz and /health through the real app and server: unready at once while draining, alive all the same."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import RECHECK_SECONDS
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
