"""GET /readyz and /health through the real app and server: unready at once while draining, alive all the same."""

from __future__ import annotations

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
