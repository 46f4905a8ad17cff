"""`claude-proxy refresh --every`: the refresh on a loop, jittered and sooner when the token falls due, one outcome
line per look, ended cleanly by SIGTERM or Ctrl-C, and ended with exit 1 and a clear line when the login is gone."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from claude_proxy.credentials.lifecycle import Outcome, Result, keep_alive, next_wait
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.credentials.refresh_support import due_login, options
from tests.proxy.lifecycle_support import (
    assert_no_secrets,
    cli_env,
    now_ms,
    read_oauth,
    run_cli,
    start_cli,
    write_credentials,
)


def outcome(result: Result = Result.SKIPPED, expires_at_ms: int | None = None, reason: str = "x") -> Outcome:
    return Outcome("refresh", result, reason, "m", expires_at_ms)


def test_the_wait_is_every_give_or_take_a_tenth_and_sooner_when_the_token_falls_due() -> None:
    now = 1_000_000.0
    far = int((now + 8 * 3600) * 1000)
    assert next_wait(outcome(expires_at_ms=far), 1800, 3600, now, lambda: 0.0) == pytest.approx(1620)
    assert next_wait(outcome(expires_at_ms=far), 1800, 3600, now, lambda: 1.0) == pytest.approx(1980)
    soon = int((now + 3600 + 100) * 1000)  # due in 100 s: looked at again just after
    assert 100 <= next_wait(outcome(expires_at_ms=soon), 1800, 3600, now, lambda: 0.5) <= 160
    assert next_wait(outcome(expires_at_ms=int(now * 1000)), 1800, 3600, now, lambda: 0.5) == 1.0  # never a spin
    failed = outcome(Result.FAILED, far, "network")  # a failure that may pass: tried again within five minutes
    assert next_wait(failed, 1800, 3600, now, lambda: 0.5) == pytest.approx(300)
    assert next_wait(failed, 60, 3600, now, lambda: 0.5) == pytest.approx(60)


def test_the_loop_refreshes_when_due_and_stops_when_asked(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    stop = threading.Event()
    seen: list[Outcome] = []

    def report(o: Outcome) -> None:
        seen.append(o)
        if len(seen) == 2:
            stop.set()

    # The token the fake issues lives 8 h, so after the refresh the second look finds nothing to do.
    assert keep_alive(creds, options(fake), 1.0, stop, report, rand=lambda: 0.0) is None
    assert [(o.result, o.reason) for o in seen] == [(Result.REFRESHED, "due"), (Result.SKIPPED, "not_due")]
    assert fake.grants == 1 and read_oauth(creds)["refreshToken"] == fake.current_refresh_token()


def test_the_loop_ends_when_the_login_is_gone(fake: FakeOAuthServer, creds: Path) -> None:
    write_credentials(creds, "sk-ant-oat01-x", "sk-ant-ort01-never-issued", now_ms() + 60_000)
    seen: list[Outcome] = []
    ended = keep_alive(creds, options(fake), 1.0, threading.Event(), seen.append)
    assert ended is not None and ended.reason == "invalid_grant" and seen == [ended]


def test_refresh_every_exits_1_with_a_clear_line_when_the_login_is_gone(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path
) -> None:
    write_credentials(creds, "sk-ant-oat01-x", "sk-ant-ort01-never-issued", now_ms() + 60_000)
    result = run_cli("refresh", "--every", "1s", "--credentials", str(creds), env=cli_env(tmp_path, fake))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert (line["result"], line["reason"]) == ("failed", "invalid_grant")
    assert f"claude-proxy: {creds} can no longer be refreshed (invalid_grant)" in result.stderr
    assert "claude auth login" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_refresh_every_runs_until_sigterm_or_ctrl_c_and_ends_cleanly(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    due_login(fake, creds)
    process = start_cli("refresh", "--every", "30m", "--credentials", str(creds), env=cli_env(tmp_path, fake))
    try:
        deadline = time.monotonic() + 30
        while fake.grants == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the line written, the loop asleep until the next look in half an hour
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped" in stderr
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert [(x["result"], x["reason"]) for x in lines] == [("refreshed", "due")]
    assert "a look every 30m, a refresh when it expires within 1h" in stderr
    assert_no_secrets([stdout, stderr], fake.issued())


def test_refresh_every_takes_durations_only(tmp_path: Path) -> None:
    for wrong in ("soon", "0s", "-5m", "1d"):
        result = run_cli("refresh", "--every", wrong, env=cli_env(tmp_path))
        assert result.returncode == 2 and "--every" in result.stderr and "Traceback" not in result.stderr
