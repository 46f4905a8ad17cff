"""The CLI leaves nobody guessing: `--version`, a `serve --help` that lists the main variables and points at the
settings table, a `check` that names the right source and says what is wrong or due, and a `refresh` that says how to
log in when there is no file yet."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

from claude_proxy.config import Settings
from tests.proxy.lifecycle_support import (
    HOUR_MS,
    assert_no_secrets,
    cli_env,
    now_ms,
    outcome_line,
    run_cli,
    write_credentials,
)

ROOT = Path(__file__).resolve().parents[2]
ACCESS = "sk-ant-oat01-test-cli"
REFRESH = "sk-ant-ort01-test-cli"


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", env=cli_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout.strip() == f"claude-proxy {importlib.metadata.version('claude-code-proxy')}"


def test_serve_help_lists_the_main_variables_and_points_at_the_settings_table(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    text = result.stdout
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CREDENTIALS_PATH", "ANTHROPIC_BASE_URL"):
        assert name in text
    for name in ("PORT", "PROXY_API_KEYS", "PROXY_MODEL_ALIASES", "LOG_LEVEL"):
        assert name in text
    assert "docs/configuration.md" in text and "claude-proxy check" in text
    defaults = Settings()  # the help gives the defaults the settings have
    assert f"listen address (default {defaults.host}, {defaults.port})" in text
    assert f"(env PROXY_SHUTDOWN_GRACE, default {defaults.shutdown_grace:g})" in " ".join(text.split())
    # every variable the help names is one the settings table of docs/configuration.md documents
    table = (ROOT / "docs" / "configuration.md").read_text().split("# Configuration", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\b(?:ANTHROPIC|CLAUDE|PROXY|LOG)_[A-Z_]+\b|\b(?:HOST|PORT)\b", text))
    assert named and all(name in table for name in named), named - {n for n in named if n in table}


def test_check_names_claude_code_oauth_token_as_the_source(tmp_path: Path) -> None:
    result = run_cli("check", "--json", env=cli_env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN=ACCESS))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["source"], report["kind"]) == ("CLAUDE_CODE_OAUTH_TOKEN", "access_token")
    text = run_cli("check", env=cli_env(tmp_path, CLAUDE_ACCESS_TOKEN=ACCESS)).stdout
    assert "source:       CLAUDE_ACCESS_TOKEN" in text
    assert_no_secrets([result.stdout, result.stderr, text], [ACCESS])


def test_check_says_unreadable_not_missing(tmp_path: Path) -> None:
    unreadable = tmp_path / "creds"
    unreadable.mkdir()  # there, but no file to read (a permission bit would not stop root, who runs CI)
    result = run_cli("check", "--json", "--credentials", str(unreadable), env=cli_env(tmp_path))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "unreadable" and report["source"] == str(unreadable)
    assert f"cannot read {unreadable}" in report["message"]
    missing = run_cli("check", "--json", "--credentials", str(tmp_path / "none.json"), env=cli_env(tmp_path))
    assert json.loads(missing.stdout)["status"] == "missing"


def test_check_warns_when_the_token_is_due_for_refresh(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    write_credentials(creds, ACCESS, REFRESH, now_ms() + HOUR_MS // 2)
    result = run_cli("check", "--credentials", str(creds), env=cli_env(tmp_path))
    assert result.returncode == 0 and "status:       valid" in result.stdout
    assert "warning: the access token expires within 1h00m and is due for refresh" in result.stdout
    assert "claude-proxy refresh" in result.stdout.split("warning:", 1)[1]
    write_credentials(creds, ACCESS, REFRESH, now_ms() + 3 * HOUR_MS)
    later = run_cli("check", "--json", "--credentials", str(creds), env=cli_env(tmp_path))
    assert json.loads(later.stdout)["warnings"] == []


def test_check_says_an_empty_api_key_was_ignored(tmp_path: Path) -> None:
    result = run_cli("check", "--json", env=cli_env(tmp_path, ANTHROPIC_API_KEY=""))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "missing"
    assert "ANTHROPIC_API_KEY is set but empty" in report["message"]
    assert report["warnings"] == ["ANTHROPIC_API_KEY is set but empty, so it is ignored"]


def test_check_refuses_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    result = run_cli("check", env=cli_env(tmp_path, ANTHROPIC_BASE_URL="api.anthropic.com"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "claude-proxy: ANTHROPIC_BASE_URL must start with http:// or https://, e.g. https://api.anthropic.com "
        "(got 'api.anthropic.com')"
    ]


def test_refresh_without_a_file_suggests_claude_auth_login(tmp_path: Path) -> None:
    result = run_cli("refresh", env=cli_env(tmp_path))  # a workstation that never logged in: no ~/.claude
    assert result.returncode == 1
    outcome = outcome_line(result.stdout)
    assert (outcome["result"], outcome["reason"]) == ("failed", "missing")
    assert "run `claude auth login`" in outcome["message"]
    assert str(tmp_path / "home" / ".claude" / ".credentials.json") in outcome["message"]
