"""A real `claude-proxy serve` is closed by default: it refuses keys that would leave it open or guessable, listens on
the loopback unless told otherwise, and writes no secret to its log even at `LOG_LEVEL=trace`, where uvicorn prints
every request's ASGI scope."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import API_KEY, OAUTH_TOKEN
from tests.fakes.anthropic import FakeAnthropic, message, text
from tests.proxy.serve_support import proxy_env, serve_process

pytestmark = pytest.mark.slow

INBOUND = "inbound-key-that-must-stay-out-of-logs"
REFRESH_TOKEN = "sk-ant-ort01-refresh-token-that-must-stay-out-of-logs"
CHAT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}


def start(tmp_path: Path, keys: str) -> subprocess.CompletedProcess[str]:
    env = proxy_env(tmp_path, {"PROXY_API_KEYS": keys, "ANTHROPIC_API_KEY": API_KEY})
    return subprocess.run(
        [sys.executable, "-m", "claude_proxy", "serve", "--port", "1"],  # never bound: it stops before listening
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("keys", ["", " ", " , ,"])
def test_serve_refuses_inbound_keys_that_name_no_key(tmp_path: Path, keys: str) -> None:
    result = start(tmp_path, keys)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "claude-proxy: PROXY_API_KEYS is set but holds no key: give one or more comma-separated keys, or unset it"
    )


def test_serve_refuses_a_short_inbound_key_without_showing_it(tmp_path: Path) -> None:
    result = start(tmp_path, f"{INBOUND},short-secret")
    assert result.returncode == 2
    assert result.stderr.startswith("claude-proxy: PROXY_API_KEYS key 2 of 2 is 12 characters long")
    assert "short-secret" not in result.stderr + result.stdout and INBOUND not in result.stderr + result.stdout


def listening_addresses(pid: int) -> set[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = {c.laddr.ip for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN}
        if found:
            return found
        time.sleep(0.05)
    return set()


def test_serve_without_keys_or_host_listens_on_the_loopback_only_and_says_so(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "LOG_FORMAT": "json"}
    with serve_process(env, tmp_path, host=None) as served:
        assert listening_addresses(served.process.pid) == {"127.0.0.1"}
        port = served.url.rsplit(":", 1)[1]
        messages = [json.loads(line).get("message") for line in served.log_lines() if line.startswith("{")]
    assert f"listening on 127.0.0.1:{port} (this machine only); no key asked for (PROXY_API_KEYS unset)" in messages


def test_serve_listens_where_host_says(fake: FakeAnthropic, tmp_path: Path) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOST": "0.0.0.0", "PROXY_API_KEYS": INBOUND}
    with serve_process(env, tmp_path, host=None) as served:
        assert listening_addresses(served.process.pid) == {"0.0.0.0"}


@pytest.mark.parametrize("credential", ["api_key", "access_token", "credentials_file"])
def test_trace_logging_writes_no_key_and_no_token(fake: FakeAnthropic, tmp_path: Path, credential: str) -> None:
    """Every secret the process holds (the inbound keys, the upstream credential, the file's refresh token) is
    grepped for in everything a `LOG_LEVEL=trace` serve wrote, after requests on each kind of route."""
    env = {"ANTHROPIC_BASE_URL": fake.url, "PROXY_API_KEYS": f"{INBOUND},{INBOUND}-second", "LOG_LEVEL": "trace"}
    if credential == "api_key":
        env["ANTHROPIC_API_KEY"] = API_KEY
    elif credential == "access_token":
        env["CLAUDE_ACCESS_TOKEN"] = OAUTH_TOKEN
    else:
        creds = tmp_path / "credentials.json"
        oauth = {"accessToken": OAUTH_TOKEN, "refreshToken": REFRESH_TOKEN, "expiresAt": 4102444800000}
        creds.write_text(json.dumps({"claudeAiOauth": oauth}))
        env["CLAUDE_CREDENTIALS_PATH"] = str(creds)
    fake.script(message(text("hello")), message(text("again")))
    with serve_process(env, tmp_path) as served:
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=INBOUND, max_retries=0, timeout=20)
        assert client.chat.completions.create(**CHAT).choices[0].message.content == "hello"  # type: ignore[call-overload]
        headers = {"x-api-key": INBOUND, "anthropic-version": "2023-06-01"}
        answer = httpx.post(f"{served.url}/v1/messages", json={**CHAT, "max_tokens": 5}, headers=headers)
        assert answer.status_code == 200
        assert httpx.get(f"{served.url}/v1/models", headers={"authorization": "Bearer wrong"}).status_code == 401
        served.terminate()
        served.process.wait(30)
        log = served.log.read_text()
    assert "ASGI [2] Started scope=" in log  # uvicorn did print each request's scope
    assert len(fake.requests) == 2
    for secret in (INBOUND, API_KEY, OAUTH_TOKEN, REFRESH_TOKEN):
        assert secret not in log
