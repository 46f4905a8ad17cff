"""`claude-proxy check`: what the proxy would use, how long it lasts, as a probe-friendly exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from claude_proxy.credentials.lifecycle import check
from claude_proxy.credentials.resolver import CredentialResolver
from tests.proxy.lifecycle_support import HOUR_MS, assert_no_secrets, cli_env, now_ms, run_cli, write_credentials

ACCESS = "sk-ant-oat01-test-chk"
REFRESH = "sk-ant-ort01-test-chk"
API_KEY = "sk-ant-api03-test-chk"


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".claude" / ".credentials.json"


def test_valid_file_reports_source_kind_expiry_and_subscription(creds: Path, tmp_path: Path) -> None:
    expires = now_ms() + 3 * HOUR_MS
    write_credentials(creds, ACCESS, REFRESH, expires)
    result = run_cli("check", env=cli_env(tmp_path))  # default resolution: $HOME/.claude/.credentials.json
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"source:       {creds}" in result.stdout
    assert "kind:         oauth_file" in result.stdout
    assert "subscription: max" in result.stdout
    assert "refresh:      present" in result.stdout
    assert "(2h59m left)" in result.stdout or "(3h00m left)" in result.stdout  # time left, to the minute
    assert_no_secrets([result.stdout, result.stderr], [ACCESS, REFRESH])


def test_json_report(creds: Path, tmp_path: Path) -> None:
    expires = now_ms() + 2 * HOUR_MS
    write_credentials(creds, ACCESS, None, expires)
    result = run_cli("check", "--json", "--credentials", str(creds), env=cli_env(tmp_path, HOME="/nonexistent"))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["status"] == "valid" and report["kind"] == "oauth_file" and report["source"] == str(creds)
    assert 2 * 3600 - 60 <= report["secondsLeft"] <= 2 * 3600
    assert report["expiresAt"].endswith("Z") and report["subscriptionType"] == "max"
    assert report["refreshToken"] == "absent"
    assert_no_secrets([result.stdout, result.stderr], [ACCESS])


def test_expired_file_exits_1_and_says_what_to_do(creds: Path, tmp_path: Path) -> None:
    write_credentials(creds, ACCESS, REFRESH, now_ms() - 60_000)
    result = run_cli("check", "--credentials", str(creds), env=cli_env(tmp_path))
    assert result.returncode == 1
    assert "status:       expired" in result.stdout and "claude-proxy refresh" in result.stdout
    assert "(-0h01m left)" in result.stdout or "(-0h00m left)" in result.stdout


def test_expired_file_without_refresh_token_points_to_login(creds: Path) -> None:
    write_credentials(creds, ACCESS, None, now_ms() - 60_000)
    report = check(CredentialResolver(None, None, creds))
    assert report.exit_code == 1 and "claude auth login" in report.message


def test_missing_file_exits_1(tmp_path: Path) -> None:
    result = run_cli("check", "--credentials", str(tmp_path / "nope.json"), env=cli_env(tmp_path))
    assert result.returncode == 1
    assert "status:       missing" in result.stdout and "ANTHROPIC_API_KEY" in result.stdout


@pytest.mark.parametrize("content", [b"{", b'{"claudeAiOauth": {"accessToken": ""}}', b'{"claudeAiOauth": []}'])
def test_malformed_file_exits_2(creds: Path, tmp_path: Path, content: bytes) -> None:
    creds.parent.mkdir(parents=True)
    creds.write_bytes(content)
    result = run_cli("check", "--credentials", str(creds), env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "status:       malformed" in result.stdout and str(creds) in result.stdout


def test_api_key_wins_as_in_the_proxy(creds: Path, tmp_path: Path) -> None:
    write_credentials(creds, ACCESS, REFRESH, now_ms() - 60_000)  # expired, but shadowed by the key
    result = run_cli("check", "--json", env=cli_env(tmp_path, ANTHROPIC_API_KEY=API_KEY))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["kind"], report["source"], report["expiresAt"]) == ("api_key", "ANTHROPIC_API_KEY", None)
    assert_no_secrets([result.stdout, result.stderr], [API_KEY, ACCESS, REFRESH])


def test_access_token_from_the_environment(tmp_path: Path) -> None:
    result = run_cli("check", env=cli_env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN=ACCESS))
    assert result.returncode == 0
    assert "kind:         access_token" in result.stdout and "expires:      unknown" in result.stdout
    assert_no_secrets([result.stdout, result.stderr], [ACCESS])


def test_check_follows_a_refreshed_file(creds: Path) -> None:
    resolver = CredentialResolver(None, None, creds)
    write_credentials(creds, ACCESS, REFRESH, now_ms() - 1000)
    assert check(resolver).exit_code == 1
    write_credentials(creds, ACCESS + "-2", REFRESH, now_ms() + HOUR_MS)
    assert check(resolver).exit_code == 0
