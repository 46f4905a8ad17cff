"""`claude-proxy seed`: install credentials from a read-only mount without ever going back in time."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from claude_proxy.credentials.lifecycle import RefreshOptions, Result, refresh, seed
from claude_proxy.credentials.store import exclusive_lock
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.lifecycle_support import (
    HOUR_MS,
    assert_no_secrets,
    cli_env,
    now_ms,
    outcome_line,
    read_oauth,
    run_cli,
    write_credentials,
)

T0 = 1_900_000_000_000  # a fixed expiry (ms); comparisons are by expiresAt, not by the clock


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "secret" / "credentials.json"
    data = write_credentials(path, "sk-ant-oat01-test-src", "sk-ant-ort01-test-src", T0, mode=0o400)
    return path, data


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "volume" / ".credentials.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_missing_target_is_created(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.COPIED, "missing")
    assert target.read_bytes() == data
    assert mode(target) == 0o600
    assert mode(target.parent) & 0o077 == 0  # created private
    assert src.read_bytes() == data and mode(src) == 0o400
    assert outcome.expires_at_ms == T0


def test_older_target_is_replaced(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    write_credentials(target, "sk-ant-oat01-test-old", "sk-ant-ort01-test-old", T0 - HOUR_MS, mode=0o644)
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.COPIED, "source_newer")
    assert target.read_bytes() == data and mode(target) == 0o600


def test_target_without_expiry_is_replaced(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    write_credentials(target, "sk-ant-oat01-test-old", "sk-ant-ort01-test-old", None)
    assert seed(src, target).reason == "source_newer"
    assert target.read_bytes() == data


def test_newer_target_is_kept(source: tuple[Path, bytes], target: Path) -> None:
    src, _ = source
    newer = write_credentials(target, "sk-ant-oat01-test-new", "sk-ant-ort01-test-new", T0 + HOUR_MS)
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.SKIPPED, "target_newer")
    assert target.read_bytes() == newer
    assert outcome.expires_at_ms == T0 + HOUR_MS


def test_same_credentials_are_not_copied_again(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    assert seed(src, target).result is Result.COPIED
    inode = target.stat().st_ino
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.SKIPPED, "up_to_date")
    assert target.stat().st_ino == inode and target.read_bytes() == data


def test_force_replaces_newer_credentials(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    write_credentials(target, "sk-ant-oat01-test-new", "sk-ant-ort01-test-new", T0 + HOUR_MS)
    outcome = seed(src, target, force=True)
    assert (outcome.result, outcome.reason) == (Result.COPIED, "forced")
    assert target.read_bytes() == data


@pytest.mark.parametrize("content", [b"", b"{broken", b'{"claudeAiOauth": 1}', b'{"claudeAiOauth": {}}'])
def test_malformed_target_is_replaced(source: tuple[Path, bytes], target: Path, content: bytes) -> None:
    src, data = source
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.COPIED, "malformed")
    assert target.read_bytes() == data


def test_unreadable_target_is_replaced(source: tuple[Path, bytes], target: Path) -> None:
    src, data = source
    target.parent.mkdir(parents=True)
    target.symlink_to(target.name)  # a symlink loop: open() fails with ELOOP
    outcome = seed(src, target)
    assert (outcome.result, outcome.reason) == (Result.COPIED, "unreadable")
    assert not target.is_symlink() and target.read_bytes() == data


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ({"other": 1}, "claudeAiOauth"),
        ({"claudeAiOauth": {"refreshToken": "sk-ant-ort01-test-x", "expiresAt": T0}}, "accessToken"),
        ({"claudeAiOauth": {"accessToken": "sk-ant-oat01-test-x", "expiresAt": T0}}, "refreshToken"),
        ({"claudeAiOauth": {"accessToken": "sk-ant-oat01-test-x", "refreshToken": "sk-ant-ort01-test-x"}}, "expiresAt"),
    ],
)
def test_invalid_source_is_refused_and_target_untouched(tmp_path: Path, target: Path, doc: object, what: str) -> None:
    src = tmp_path / "secret.json"
    if doc is not None:
        src.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    existing = write_credentials(target, "sk-ant-oat01-test-old", "sk-ant-ort01-test-old", T0 - HOUR_MS)
    outcome = seed(src, target)
    assert outcome.result is Result.FAILED
    assert outcome.reason == ("missing" if doc is None else "malformed")
    assert what in outcome.message and str(src) in outcome.message
    assert target.read_bytes() == existing


def test_seed_waits_for_a_refresher_holding_the_lock(source: tuple[Path, bytes], target: Path) -> None:
    src, _ = source
    target.parent.mkdir(parents=True)
    with exclusive_lock(target, timeout=1):
        outcome = seed(src, target, lock_timeout=0.2)
    assert (outcome.result, outcome.reason) == (Result.FAILED, "locked")
    assert not target.exists()


def test_rerun_after_a_refresh_is_a_noop(tmp_path: Path) -> None:
    """The Secret keeps the original login; after the refresher rotated it, re-seeding must not undo that."""
    with FakeOAuthServer() as fake:
        login = fake.login()
        src = tmp_path / "secret.json"
        write_credentials(src, login.access_token, login.refresh_token, now_ms() + 30 * 60_000, mode=0o400)
        target = tmp_path / "volume" / ".credentials.json"
        env = cli_env(tmp_path, fake)

        first = run_cli("seed", "--from", str(src), "--to", str(target), env=env)
        assert first.returncode == 0 and outcome_line(first.stdout)["result"] == "copied"
        assert refresh(target, RefreshOptions(token_url=fake.url)).result is Result.REFRESHED
        refreshed = target.read_bytes()

        again = run_cli("seed", "--from", str(src), "--to", str(target), env=env)
        assert again.returncode == 0, again.stderr
        outcome = outcome_line(again.stdout)
        assert (outcome["command"], outcome["result"], outcome["reason"]) == ("seed", "skipped", "target_newer")
        assert target.read_bytes() == refreshed
        assert read_oauth(target)["refreshToken"] == fake.current_refresh_token()
        assert (tmp_path / "termination-log").read_text().strip() == again.stdout.strip()
        assert_no_secrets([first.stdout, first.stderr, again.stdout, again.stderr], fake.issued())


def test_cli_failure_exit_code_and_line(tmp_path: Path) -> None:
    src = tmp_path / "secret.json"
    src.write_text("{}")
    result = run_cli("seed", "--from", str(src), "--to", str(tmp_path / "t.json"), env=cli_env(tmp_path))
    assert result.returncode == 1
    outcome = outcome_line(result.stdout)
    assert (outcome["command"], outcome["result"], outcome["reason"]) == ("seed", "failed", "malformed")
    assert outcome["expiresAt"] is None
    assert not (tmp_path / "t.json").exists()


def test_cli_requires_both_paths(tmp_path: Path) -> None:
    result = run_cli("seed", "--from", str(tmp_path / "x"), env=cli_env(tmp_path))
    assert result.returncode == 2 and "--to" in result.stderr
