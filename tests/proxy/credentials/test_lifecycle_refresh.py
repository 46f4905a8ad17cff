"""`claude-proxy refresh` as a command, against a real (fake) rotating token endpoint on 127.0.0.1: when a token is
due, what the file keeps, the paths and client id it resolves, and how it fails. Its policy in process:
test_lifecycle_refresh_policy.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from claude_proxy import __version__
from tests.fakes.oauth import CLIENT_ID, FakeOAuthServer
from tests.proxy.credentials.refresh_support import due_login, no_temp_files
from tests.proxy.lifecycle_support import (
    EXTRA_OAUTH,
    EXTRA_TOP,
    HOUR_MS,
    assert_no_secrets,
    cli_env,
    now_ms,
    outcome_line,
    read_oauth,
    run_cli,
    write_credentials,
)


def test_not_due_is_a_noop(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 5 * HOUR_MS)
    result = run_cli("refresh", "--credentials", str(creds), env=cli_env(tmp_path, fake))
    assert result.returncode == 0, result.stderr
    outcome = outcome_line(result.stdout)
    assert (outcome["command"], outcome["result"], outcome["reason"]) == ("refresh", "skipped", "not_due")
    assert outcome["expiresAt"] is not None
    assert fake.grants == 0 and fake.requests == []
    assert creds.read_bytes() == data
    assert_no_secrets([result.stdout, result.stderr], fake.issued())


def test_due_refreshes_preserves_other_keys_and_mode(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 30 * 60_000, mode=0o644)
    before = now_ms()
    env = cli_env(tmp_path, fake)
    result = run_cli("refresh", "--credentials", str(creds), "--log-level", "debug", env=env)
    assert result.returncode == 0, result.stderr
    outcome = outcome_line(result.stdout)
    assert (outcome["result"], outcome["reason"]) == ("refreshed", "due")
    assert fake.grants == 1

    document = json.loads(creds.read_bytes())
    oauth = document["claudeAiOauth"]
    assert oauth["refreshToken"] == fake.current_refresh_token() != login.refresh_token
    assert oauth["accessToken"].startswith("sk-ant-oat01-test-") and oauth["accessToken"] != login.access_token
    assert before + fake.expires_in * 1000 <= oauth["expiresAt"] <= now_ms() + fake.expires_in * 1000
    assert {k: oauth[k] for k in EXTRA_OAUTH} == EXTRA_OAUTH
    assert {k: document[k] for k in EXTRA_TOP} == EXTRA_TOP
    assert set(document) == {"claudeAiOauth", *EXTRA_TOP}
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert no_temp_files(creds.parent)

    # The request: JSON grant with the configured client id and an honest User-Agent.
    (request,) = fake.requests
    assert request["body"] == {
        "grant_type": "refresh_token",
        "refresh_token": login.refresh_token,
        "client_id": CLIENT_ID,
    }
    assert request["headers"]["content-type"].startswith("application/json")
    assert request["headers"]["user-agent"] == f"claude-code-proxy/{__version__}"

    # The same line goes to the termination log for the operator.
    assert (tmp_path / "termination-log").read_text().strip() == result.stdout.strip()
    assert outcome["expiresAt"] is not None and outcome["expiresAt"].endswith("Z")
    assert_no_secrets([result.stdout, result.stderr, (tmp_path / "termination-log").read_text()], fake.issued())


def test_force_refreshes_a_token_that_is_not_due(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 7 * HOUR_MS)
    result = run_cli("refresh", "--credentials", str(creds), "--force", env=cli_env(tmp_path, fake))
    assert result.returncode == 0, result.stderr
    assert outcome_line(result.stdout)["reason"] == "forced"
    assert fake.grants == 1
    assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token()


def test_before_sets_how_early_a_refresh_is_due(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 2 * HOUR_MS)
    env = cli_env(tmp_path, fake)
    assert outcome_line(run_cli("refresh", "--credentials", str(creds), env=env).stdout)["reason"] == "not_due"
    result = run_cli("refresh", "--credentials", str(creds), "--before", "180", env=env)
    assert outcome_line(result.stdout)["result"] == "refreshed"
    assert fake.grants == 1


def test_default_path_resolution_and_client_id_from_env(fake: FakeOAuthServer, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    creds = config_dir / ".credentials.json"
    fake.client_id = "another-client"
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    env = cli_env(tmp_path, fake, CLAUDE_CONFIG_DIR=str(config_dir), CLAUDE_OAUTH_CLIENT_ID="another-client")
    result = run_cli("refresh", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert outcome_line(result.stdout)["result"] == "refreshed"
    assert fake.requests[0]["body"]["client_id"] == "another-client"


def test_spent_refresh_token_fails_clearly_and_leaves_the_file(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path
) -> None:
    data, _ = due_login(fake, creds)
    env = cli_env(tmp_path, fake)
    # Someone else (a second machine with a copy of the file) refreshes first and the token rotates away.
    copy = creds.with_name("elsewhere.json")
    copy.write_bytes(data)
    assert run_cli("refresh", "--credentials", str(copy), env=env).returncode == 0
    assert fake.grants == 1

    fake.echo_token_in_errors = True  # even an endpoint that echoes the token must not make us print it
    result = run_cli("refresh", "--credentials", str(creds), "--log-level", "debug", env=env)
    assert result.returncode == 1
    outcome = outcome_line(result.stdout)
    assert (outcome["result"], outcome["reason"]) == ("failed", "invalid_grant")
    assert "claude auth login" in outcome["message"]
    assert creds.read_bytes() == data
    assert no_temp_files(creds.parent)
    assert json.loads((tmp_path / "termination-log").read_text())["reason"] == "invalid_grant"
    assert_no_secrets([result.stdout, result.stderr], fake.issued())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "malformed"),
        (b"[]", "malformed"),
        (b'{"other": {}}', "malformed"),
        (b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-test-x", "expiresAt": "soon"}}', "malformed"),
        (b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-test-x", "expiresAt": NaN}}', "malformed"),
        (b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-test-x", "expiresAt": 1}}', "no_refresh_token"),
        (None, "missing"),
    ],
)
def test_bad_files_fail_clearly(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    if content is not None:
        creds.write_bytes(content)
    result = run_cli("refresh", "--credentials", str(creds), env=cli_env(tmp_path, fake))
    assert result.returncode == 1
    outcome = outcome_line(result.stdout)
    assert (outcome["result"], outcome["reason"]) == ("failed", reason)
    assert str(creds) in outcome["message"]
    assert "Traceback" not in result.stderr
    assert fake.grants == 0
    if content is None:
        assert not creds.exists()
    else:
        assert creds.read_bytes() == content
    assert "sk-ant-o" not in result.stdout + result.stderr
