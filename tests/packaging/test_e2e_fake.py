"""The e2e test's in-cluster upstream, rehearsed here on 127.0.0.1: the real proxy app answers with the seeded
login, `claude-proxy refresh` rotates it at the fake token endpoint, and the proxy then uses the rotated token
(the old one is refused) — the path the kind test checks in a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.fake.upstream import SEED_ACCESS_TOKEN, Upstream, seed_credentials
from openai import OpenAI

from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import RECHECK_SECONDS
from claude_proxy.server.app import create_app
from tests.conftest import serve

pytestmark = pytest.mark.slow


def fake_state(upstream: Upstream) -> dict[str, Any]:
    with urllib.request.urlopen(upstream.state_url, timeout=5) as response:
        return json.loads(response.read())


def test_refresh_rotates_the_token_the_proxy_uses(tmp_path: Path) -> None:
    credentials = tmp_path / ".credentials.json"
    credentials.write_text(seed_credentials(int((time.time() + 30 * 60) * 1000)))
    credentials.chmod(0o600)
    with Upstream(host="127.0.0.1", ports=(0, 0, 0)) as upstream:
        env = {"ANTHROPIC_BASE_URL": upstream.anthropic.url, "CLAUDE_CREDENTIALS_PATH": str(credentials),
               "HOME": str(tmp_path), "PROXY_API_KEYS": "e2e-client-key-of-the-test"}  # fmt: skip
        with serve(create_app(Settings.from_env(env))) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="e2e-client-key-of-the-test", max_retries=0)
            messages: Any = [{"role": "user", "content": "hello"}]
            first = client.chat.completions.create(model="claude-sonnet-4-6", messages=messages)
            assert first.choices[0].message.content
            assert fake_state(upstream) == {"grants": 0, "messages": 1, "lastTokenSerial": 1}

            refresh = subprocess.run(
                [str(Path(sys.executable).parent / "claude-proxy"), "refresh", "--credentials", str(credentials),
                 "--before", "60", "--token-url", upstream.oauth.url],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert refresh.returncode == 0, refresh.stderr
            assert json.loads(refresh.stdout)["result"] == "refreshed"
            # The proxy looks at the file at most once per RECHECK_SECONDS (sooner would cost a refused attempt).
            time.sleep(RECHECK_SECONDS)

            chunks = client.chat.completions.create(model="claude-sonnet-4-6", messages=messages, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert fake_state(upstream) == {"grants": 1, "messages": 2, "lastTokenSerial": 2}

        stale = httpx.post(
            f"{upstream.anthropic.url}/v1/messages",
            headers={"authorization": f"Bearer {SEED_ACCESS_TOKEN}", "anthropic-version": "2023-06-01",
                     "anthropic-beta": "oauth-2025-04-20"},
            json={"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
        )  # fmt: skip
        assert stale.status_code == 401, "the rotated-away token must be refused"
