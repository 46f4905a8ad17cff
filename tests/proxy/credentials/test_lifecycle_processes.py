"""Refreshers as real processes: concurrency on one file, SIGKILL at various points, and a long-lived login."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from claude_proxy.credentials.lifecycle import RefreshOptions, Result, refresh
from claude_proxy.credentials.resolver import CredentialResolver, parse_credentials
from claude_proxy.credentials.store import exclusive_lock
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.lifecycle_support import (
    HOUR_MS,
    assert_no_secrets,
    cli_env,
    now_ms,
    outcome_line,
    read_oauth,
    start_cli,
    write_credentials,
)

pytestmark = pytest.mark.slow


def finish(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def assert_intact(path: Path) -> None:
    """The file is a complete, valid credentials file with mode 0600."""
    parsed = parse_credentials(path.read_bytes(), str(path))
    assert parsed.refresh_token and parsed.expires_at_ms
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_two_refreshers_started_at_once_make_exactly_one_grant(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path
) -> None:
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 5 * 60_000)
    fake.delay = 1.0  # the first grant is still in flight when the second process wants the lock
    env = cli_env(tmp_path, fake)
    procs = [start_cli("refresh", "--credentials", str(creds), env=env) for _ in range(2)]
    results = [finish(p) for p in procs]

    assert [rc for rc, _, _ in results] == [0, 0], results
    outcomes = sorted((outcome_line(out) for _, out, _ in results), key=lambda o: o["result"])
    assert [o["result"] for o in outcomes] == ["refreshed", "skipped"]
    assert "another refresher" in outcomes[1]["message"]  # it waited on the lock, then re-read the file
    assert outcomes[0]["expiresAt"] == outcomes[1]["expiresAt"]
    assert fake.grants == 1
    assert_intact(creds)
    assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token()
    assert_no_secrets([text for _, out, err in results for text in (out, err)], fake.issued())


def test_kill_while_waiting_for_the_lock_changes_nothing(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    with exclusive_lock(creds, timeout=1):
        proc = start_cli("refresh", "--credentials", str(creds), env=cli_env(tmp_path, fake))
        time.sleep(0.4)
        assert proc.poll() is None, "the refresher must be blocked on the lock"
        kill(proc)
    assert creds.read_bytes() == data
    assert fake.requests == []
    # The lock died with the process: the next refresher gets it at once and the login is alive.
    assert refresh(creds, RefreshOptions(token_url=fake.url, lock_timeout=2)).result is Result.REFRESHED


def test_kill_mid_grant_leaves_the_old_file_intact(fake: FakeOAuthServer, creds: Path, tmp_path: Path) -> None:
    """A real endpoint finishes a grant whose client died: the file stays whole, the next run says why it fails."""
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    fake.delay = 0.6
    env = cli_env(tmp_path, fake)
    proc = start_cli("refresh", "--credentials", str(creds), env=env)
    assert fake.request_started.wait(15)
    kill(proc)
    assert creds.read_bytes() == data
    time.sleep(fake.delay + 0.2)  # the endpoint completes the orphaned grant: the stored refresh token is spent
    assert fake.grants == 1 and not fake.is_valid(login.refresh_token)

    fake.delay = 0
    proc = start_cli("refresh", "--credentials", str(creds), env=env)
    rc, out, err = finish(proc)
    assert rc == 1
    outcome = outcome_line(out)
    assert outcome["reason"] == "invalid_grant" and "claude auth login" in outcome["message"]
    assert creds.read_bytes() == data
    assert not list(creds.parent.glob("*.tmp")), "the killed writer's temp file is cleaned up under the lock"
    assert_no_secrets([out, err], fake.issued())


def test_kill_mid_grant_against_a_transactional_endpoint_keeps_the_login(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path
) -> None:
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    fake.delay = 0.4
    fake.commit_when_client_gone = False
    env = cli_env(tmp_path, fake)
    proc = start_cli("refresh", "--credentials", str(creds), env=env)
    assert fake.request_started.wait(15)
    kill(proc)
    assert creds.read_bytes() == data
    assert list(creds.parent.glob("*.tmp")), "the writer had prepared its temp file before the grant"
    time.sleep(fake.delay + 0.2)
    assert fake.grants == 0 and fake.is_valid(login.refresh_token)

    fake.delay = 0
    rc, out, _ = finish(start_cli("refresh", "--credentials", str(creds), env=env))
    assert rc == 0 and outcome_line(out)["result"] == "refreshed"
    assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token()
    assert not list(creds.parent.glob("*.tmp"))


@pytest.mark.parametrize("offset", [0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.3])
def test_kill_at_any_moment_leaves_the_old_or_the_new_file(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path, offset: float
) -> None:
    """Kills spread over a whole run (start-up, lock, grant, write, rename): never a broken file."""
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    fake.delay = 0.05
    proc = start_cli("refresh", "--credentials", str(creds), env=cli_env(tmp_path, fake))
    time.sleep(offset)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    time.sleep(fake.delay + 0.05)  # let an orphaned grant finish so the fake's state is final
    current = creds.read_bytes()
    if current != data:
        assert_intact(creds)
        assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token()
    leftovers = [p.name for p in creds.parent.iterdir() if p.name not in {creds.name, creds.name + ".lock"}]
    assert all(name.startswith(f".{creds.name}.") and name.endswith(".tmp") for name in leftovers), leftovers


def _due_window_minutes(creds: Path) -> str:
    """A --before that makes the stored token due now, while a token fresh from the fake is not."""
    left_ms = read_oauth(creds)["expiresAt"] - now_ms()
    return str(max(1, left_ms // 60_000 + 1))


def test_login_survives_many_rotations_with_concurrent_refreshers_and_crashes(
    fake: FakeOAuthServer, creds: Path, tmp_path: Path
) -> None:
    """The login is kept alive only by `claude-proxy refresh` runs: pairs at once, peers killed while waiting,
    holders killed mid-grant (against an endpoint that does not commit for a vanished client)."""
    fake.commit_when_client_gone = False
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + HOUR_MS)
    env = cli_env(tmp_path, fake)
    outputs: list[str] = []
    rounds = 9
    for round_no in range(rounds):
        fake.expires_in = 2 * 3600 + round_no * 600  # each new token outlives the previous window
        before = _due_window_minutes(creds)
        args = ("refresh", "--credentials", str(creds), "--before", before)
        fake.request_started.clear()
        fake.delay = 0.25
        if round_no % 3 == 0:  # two at once
            procs = [start_cli(*args, env=env) for _ in range(2)]
        elif round_no % 3 == 1:  # a waiting peer is killed, the holder finishes
            holder = start_cli(*args, env=env)
            assert fake.request_started.wait(15)
            waiter = start_cli(*args, env=env)
            time.sleep(0.15)
            kill(waiter)
            procs = [holder]
        else:  # the holder is killed mid-grant, two others take over
            victim = start_cli(*args, env=env)
            assert fake.request_started.wait(15)
            kill(victim)
            time.sleep(fake.delay + 0.1)
            procs = [start_cli(*args, env=env) for _ in range(2)]
        results = [finish(p) for p in procs]
        for rc, out, err in results:
            assert rc == 0, (round_no, out, err)
            outputs += [out, err]
        assert sorted(outcome_line(out)["result"] for _, out, _ in results).count("refreshed") == 1
        assert fake.grants == round_no + 1
        assert_intact(creds)
        assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token(), f"login lost in round {round_no}"
    assert fake.grants == rounds
    assert_no_secrets(outputs, fake.issued())


def test_many_rotations_in_process_with_a_reading_proxy(fake: FakeOAuthServer, creds: Path) -> None:
    """100 rotations, three refresher threads per round, and a resolver reading all along (as the proxy does):
    one grant per round, the reader never sees a partial file, and each token it sees was issued."""
    login = fake.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    virtual_now = [time.time()]
    options = RefreshOptions(token_url=fake.url, timeout=5, lock_timeout=10)
    resolver = CredentialResolver(None, None, creds)
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_all_along() -> None:
        while not stop.is_set():
            try:
                seen.add(resolver.resolve().token)
                time.sleep(0)  # let the refreshers have the GIL: a tight loop starved them
            except BaseException as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        for round_no in range(100):
            virtual_now[0] += fake.expires_in - 600  # the stored token is due again
            outcomes: list[Result] = []

            def run(outcomes: list[Result] = outcomes) -> None:
                outcomes.append(refresh(creds, options, clock=lambda: virtual_now[0]).result)

            threads = [threading.Thread(target=run) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert sorted(outcomes) == [Result.REFRESHED, Result.SKIPPED, Result.SKIPPED], round_no
            assert fake.grants == round_no + 1
    finally:
        stop.set()
        reader.join(5)
    assert errors == []
    assert read_oauth(creds)["refreshToken"] == fake.current_refresh_token()
    assert resolver.resolve().token == read_oauth(creds)["accessToken"]
    assert seen <= set(fake.issued())
    assert len(seen) > 10, "the reader kept picking up new tokens without a restart"
    assert json.loads(creds.read_bytes())["version"] == 3
