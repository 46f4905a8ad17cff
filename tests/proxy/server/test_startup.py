"""The proxy says what is happening as it starts: which upstream and which credential, never the secret. The errors a
client sees are tested in test_render.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from tests.conftest import API_KEY, OAUTH_TOKEN, serve
from tests.fakes.anthropic import FakeAnthropic
from tests.proxy.serve_support import serve_process


def start_lines(caplog: pytest.LogCaptureFixture, env: dict[str, str]) -> list[logging.LogRecord]:
    """The records the app logs while starting under uvicorn with `env`."""
    caplog.set_level(logging.INFO, logger="claude_proxy")
    with serve(create_app(Settings.from_env(env))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
    return [r for r in caplog.records if r.name == "claude_proxy"]


def test_start_names_the_upstream_and_the_api_key_variable(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path
) -> None:
    records = start_lines(caplog, {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    lines = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert f"upstream {fake.url}, credential: a Console API key from ANTHROPIC_API_KEY" in lines
    assert all(API_KEY not in r.getMessage() for r in records)


def test_start_names_claude_code_oauth_token_and_hides_a_gateway_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    env = {
        "ANTHROPIC_BASE_URL": "https://proxyuser:s3cret-pass@gateway.example/anthropic",
        "CLAUDE_CODE_OAUTH_TOKEN": OAUTH_TOKEN,
        "HOME": str(tmp_path),
    }
    messages = [r.getMessage() for r in start_lines(caplog, env)]
    assert (
        "upstream https://gateway.example/anthropic, credential: an OAuth access token from CLAUDE_CODE_OAUTH_TOKEN"
        in messages
    )
    assert not any("s3cret-pass" in m or OAUTH_TOKEN in m for m in messages)


def test_start_names_the_credentials_file_and_its_expiry(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    doc = {"claudeAiOauth": {"accessToken": OAUTH_TOKEN, "refreshToken": "r", "expiresAt": 4102444800000}}
    creds.write_text(json.dumps(doc))
    env = {"CLAUDE_CREDENTIALS_PATH": str(creds), "HOME": str(tmp_path)}
    messages = [r.getMessage() for r in start_lines(caplog, env)]
    expected = (
        f"upstream https://api.anthropic.com, credential: an OAuth token from the credentials file {creds} "
        "(expires 2100-01-01T00:00:00Z)"
    )
    assert expected in messages


def test_start_warns_loudly_when_no_credential_resolves_and_says_an_empty_key_was_ignored(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path
) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "", "HOME": str(tmp_path)}
    warnings = [r.getMessage() for r in start_lines(caplog, env) if r.levelno == logging.WARNING]
    assert "ANTHROPIC_API_KEY is set but empty: ignored" in warnings
    loud = [w for w in warnings if w.startswith("NO UPSTREAM CREDENTIAL")]
    assert len(loud) == 1
    assert fake.url in loud[0] and "503" in loud[0]
    assert "ANTHROPIC_API_KEY is set but empty" in loud[0].split("(", 1)[1]
    assert str(tmp_path / ".claude" / ".credentials.json") in loud[0]


@pytest.mark.slow
def test_serve_logs_the_credential_line_at_start(fake: FakeAnthropic, tmp_path: Path) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "LOG_FORMAT": "json"}
    with serve_process(env, tmp_path) as served:
        lines = [json.loads(line) for line in served.log_lines() if line.startswith("{")]
    messages = [line["message"] for line in lines if "message" in line]
    assert f"upstream {fake.url}, credential: a Console API key from ANTHROPIC_API_KEY" in messages
    assert API_KEY not in served.log.read_text()


def test_start_warns_of_an_expired_file_token_with_what_to_run(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path
) -> None:
    creds = tmp_path / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    oauth = {"accessToken": OAUTH_TOKEN, "refreshToken": "sk-ant-ort01-r", "expiresAt": 1_000_000_000_000}
    creds.write_text(json.dumps({"claudeAiOauth": oauth}))
    creds.chmod(0o600)
    records = start_lines(caplog, {"ANTHROPIC_BASE_URL": fake.url, "HOME": str(tmp_path)})
    (line,) = [r for r in records if "credential:" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "(expired 2001-09-09T01:46:40Z)" in line.getMessage()
    assert f"claude-proxy refresh --credentials {creds}" in line.getMessage()
    assert not [r for r in records if "chmod" in r.getMessage()]  # 0600: nothing to say about the mode
    assert all("sk-ant-o" not in r.getMessage() for r in records)


def test_start_warns_of_a_refresh_token_others_may_read(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path
) -> None:
    creds = tmp_path / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    oauth = {"accessToken": OAUTH_TOKEN, "refreshToken": "sk-ant-ort01-r", "expiresAt": 4102444800000}
    creds.write_text(json.dumps({"claudeAiOauth": oauth}))
    creds.chmod(0o644)
    records = start_lines(caplog, {"ANTHROPIC_BASE_URL": fake.url, "HOME": str(tmp_path)})
    (line,) = [r for r in records if "chmod" in r.getMessage()]
    assert line.levelno == logging.WARNING and "(mode 0644)" in line.getMessage()
    assert f"chmod 600 {creds}" in line.getMessage()
    credential = [r for r in records if "credential:" in r.getMessage()]
    assert [r.levelno for r in credential] == [logging.INFO]  # valid for long: the credential line stays INFO


def test_start_names_an_oauth_token_in_anthropic_api_key_as_one(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path
) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": OAUTH_TOKEN, "HOME": str(tmp_path)}
    lines = [r.getMessage() for r in start_lines(caplog, env)]
    assert (
        f"upstream {fake.url}, credential: an OAuth access token (sk-ant-oat…, sent as a Bearer token) from "
        "ANTHROPIC_API_KEY" in lines
    )


@pytest.mark.parametrize(
    ("env", "level", "message"),
    [
        ({}, logging.INFO, "listening on 127.0.0.1:8080 (this machine only); no key asked for (PROXY_API_KEYS unset)"),
        (
            {"HOST": "0.0.0.0", "PROXY_API_KEYS": "inbound-key-number-one,inbound-key-number-two"},
            logging.INFO,
            "listening on 0.0.0.0:8080; clients must present one of 2 PROXY_API_KEYS",
        ),
        (
            {"HOST": "0.0.0.0", "PORT": "9000"},
            logging.WARNING,
            "listening on 0.0.0.0:9000 WITHOUT KEYS (PROXY_API_KEYS unset): whoever reaches this address uses the "
            "upstream credential; set PROXY_API_KEYS, or guard the address otherwise (e.g. a NetworkPolicy)",
        ),
    ],
)
def test_start_says_where_it_listens_and_whether_keys_guard_it(
    caplog: pytest.LogCaptureFixture, fake: FakeAnthropic, tmp_path: Path, env: dict[str, str], level: int, message: str
) -> None:
    records = start_lines(
        caplog, {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path), **env}
    )
    assert (level, message) in [(r.levelno, r.getMessage()) for r in records]
    assert all("inbound-key-number" not in r.getMessage() for r in records)
