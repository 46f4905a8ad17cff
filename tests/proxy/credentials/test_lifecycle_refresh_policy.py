"""The refresh policy in process, against a real (fake) rotating token endpoint on 127.0.0.1: retries and their
waits, refusals, lost answers, saving, the lock shared with peers, and no token in any log."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from claude_proxy.credentials.lifecycle import RefreshOptions, Result, refresh
from claude_proxy.credentials.oauth import REFRESH_RETRY
from claude_proxy.credentials.store import exclusive_lock, lock_path
from tests.fakes.oauth import CLIENT_ID, FakeOAuthServer, Scripted
from tests.proxy.credentials.refresh_support import Sleeps, due_login, no_temp_files, options
from tests.proxy.lifecycle_support import (
    HOUR_MS,
    assert_no_secrets,
    now_ms,
    read_oauth,
    write_credentials,
)


def test_response_without_refresh_token_keeps_the_stored_one(fake: FakeOAuthServer, creds: Path) -> None:
    _, refresh_token = due_login(fake, creds)
    fake.omit_refresh_token = True
    outcome = refresh(creds, options(fake))
    assert outcome.result is Result.REFRESHED and "kept" in outcome.message
    oauth = read_oauth(creds)
    assert oauth["refreshToken"] == refresh_token
    assert oauth["accessToken"] != fake.requests[0]["body"]["refresh_token"]
    assert fake.is_valid(refresh_token)


def test_rate_limit_honours_retry_after(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    fake.script(Scripted(429, {"error": "rate_limited"}, {"retry-after": "7"}))
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake), sleep=sleeps)
    assert outcome.result is Result.REFRESHED
    assert sleeps == [7.0]
    assert fake.grants == 1 and len(fake.requests) == 2


def test_rate_limit_beyond_the_wait_budget_fails_without_waiting(fake: FakeOAuthServer, creds: Path) -> None:
    data, _ = due_login(fake, creds)
    fake.script(Scripted(429, {"error": "rate_limited"}, {"retry-after": "3600"}))
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake, retry=replace(REFRESH_RETRY, max_retries=3, max_wait=120)), sleep=sleeps)
    assert (outcome.result, outcome.reason) == (Result.FAILED, "rate_limited")
    assert "3600s" in outcome.message
    assert sleeps == [] and len(fake.requests) == 1
    assert creds.read_bytes() == data


def test_server_errors_are_retried_with_bounded_backoff(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    fake.script(Scripted(500, {"error": "server_error"}), Scripted(503, "upstream unavailable"))
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake, retry=replace(REFRESH_RETRY, max_retries=2, base_delay=2)), sleep=sleeps)
    assert outcome.result is Result.REFRESHED
    assert len(sleeps) == 2 and 1 <= sleeps[0] <= 2 and 2 <= sleeps[1] <= 4


def test_persistent_server_errors_give_up_and_leave_the_file(fake: FakeOAuthServer, creds: Path) -> None:
    data, refresh_token = due_login(fake, creds)
    fake.script(*[Scripted(500, {"error": "server_error"})] * 3)
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake, retry=replace(REFRESH_RETRY, max_retries=2)), sleep=sleeps)
    assert (outcome.result, outcome.reason) == (Result.FAILED, "server_error")
    assert "3 attempts" in outcome.message
    assert len(fake.requests) == 3 and len(sleeps) == 2
    assert creds.read_bytes() == data and fake.is_valid(refresh_token)
    assert no_temp_files(creds.parent)


def test_dropped_connection_is_retried(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    fake.script(Scripted(drop=True))
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake), sleep=sleeps)
    assert outcome.result is Result.REFRESHED
    assert len(sleeps) == 1 and fake.grants == 1


def test_unreachable_endpoint_fails_as_network_error(creds: Path) -> None:
    with FakeOAuthServer() as gone:
        url = gone.url
        login = gone.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    sleeps = Sleeps()
    outcome = refresh(creds, RefreshOptions(token_url=url, retry=replace(REFRESH_RETRY, max_retries=2)), sleep=sleeps)
    assert (outcome.result, outcome.reason) == (Result.FAILED, "network")
    assert len(sleeps) == 2
    assert creds.read_bytes() == data


def test_slow_endpoint_times_out(fake: FakeOAuthServer, creds: Path) -> None:
    data, _ = due_login(fake, creds)
    fake.delay = 1.0
    outcome = refresh(creds, options(fake, timeout=0.2, retry=replace(REFRESH_RETRY, max_retries=0)))
    assert (outcome.result, outcome.reason) == (Result.FAILED, "network")
    assert "timed out" in outcome.message
    assert creds.read_bytes() == data


def test_invalid_grant_after_a_lost_answer_says_the_token_may_be_spent(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    fake.script(Scripted(502, "bad gateway"), Scripted(400, {"error": "invalid_grant"}))
    outcome = refresh(creds, options(fake), sleep=Sleeps())
    assert outcome.reason == "invalid_grant"
    assert "may have used the token" in outcome.message


@pytest.mark.parametrize(
    "answer",
    [Scripted(200, {"token_type": "Bearer"}), Scripted(200, "not json"), Scripted(200, ["access_token"])],
)
def test_unusable_success_answer_leaves_the_file(fake: FakeOAuthServer, creds: Path, answer: Scripted) -> None:
    data, _ = due_login(fake, creds)
    fake.script(answer)
    outcome = refresh(creds, options(fake))
    assert (outcome.result, outcome.reason) == (Result.FAILED, "bad_response")
    assert creds.read_bytes() == data


def test_other_refusals_are_not_retried(fake: FakeOAuthServer, creds: Path) -> None:
    data, _ = due_login(fake, creds)
    sleeps = Sleeps()
    outcome = refresh(creds, options(fake, client_id="wrong-client"), sleep=sleeps)
    assert (outcome.result, outcome.reason) == (Result.FAILED, "rejected")
    assert "invalid_client" in outcome.message
    assert sleeps == [] and len(fake.requests) == 1
    assert creds.read_bytes() == data


def test_save_failure_after_the_grant_is_reported_and_the_file_is_intact(
    fake: FakeOAuthServer, creds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = due_login(fake, creds)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    outcome = refresh(creds, options(fake))
    monkeypatch.undo()
    assert (outcome.result, outcome.reason) == (Result.FAILED, "write_failed")
    assert "claude auth login" in outcome.message and "No space left" in outcome.message
    assert creds.read_bytes() == data
    assert no_temp_files(creds.parent)


def test_stale_temp_files_of_a_killed_writer_are_removed(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    stale = creds.parent / f".{creds.name}.abc123.tmp"
    stale.write_bytes(b'{"half": ')
    unrelated = creds.parent / "keep.tmp"
    unrelated.write_bytes(b"x")
    assert refresh(creds, options(fake)).result is Result.REFRESHED
    assert not stale.exists() and unrelated.exists()


def test_waits_for_the_lock_then_sees_the_peer_refresh(fake: FakeOAuthServer, creds: Path) -> None:
    """Under the lock the file is read again: a token renewed meanwhile is not refreshed twice."""
    _, refresh_token = due_login(fake, creds)
    import threading

    outcome_box: list[object] = []
    with exclusive_lock(creds, timeout=1):
        worker = threading.Thread(target=lambda: outcome_box.append(refresh(creds, options(fake))))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive(), "the refresher must wait for the lock"
        # The peer holding the lock refreshes (as another process would).
        login = fake.login()
        write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 8 * HOUR_MS)
    worker.join(5)
    (outcome,) = outcome_box
    assert outcome.result is Result.SKIPPED and "another refresher" in outcome.message  # type: ignore[attr-defined]
    assert fake.grants == 0 and fake.is_valid(refresh_token)
    assert lock_path(creds).exists()


def test_lock_timeout_fails_without_touching_anything(fake: FakeOAuthServer, creds: Path) -> None:
    data, _ = due_login(fake, creds)
    with exclusive_lock(creds, timeout=1):
        outcome = refresh(creds, options(fake, lock_timeout=0.2))
    assert (outcome.result, outcome.reason) == (Result.FAILED, "locked")
    assert creds.read_bytes() == data and fake.requests == []


def test_no_token_reaches_any_logger_even_at_debug(
    fake: FakeOAuthServer, creds: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger (ours, httpx, httpcore) at DEBUG through retries, a refresh and an invalid_grant."""
    caplog.set_level(logging.DEBUG)
    due_login(fake, creds)
    fake.script(Scripted(429, {"error": "rate_limited"}, {"retry-after": "0"}), Scripted(503, "busy"))
    assert refresh(creds, options(fake), sleep=Sleeps()).result is Result.REFRESHED
    fake.echo_token_in_errors = True
    assert refresh(creds, options(fake, force=True, client_id=CLIENT_ID)).result is Result.REFRESHED
    stale = creds.read_bytes()
    assert refresh(creds, options(fake, force=True)).result is Result.REFRESHED
    creds.write_bytes(stale)  # a spent refresh token: the endpoint echoes it back in its error
    outcome = refresh(creds, options(fake, force=True))
    assert outcome.reason == "invalid_grant"
    assert any(r.name.startswith("httpcore") for r in caplog.records), "transport debug logs were captured"
    assert_no_secrets([caplog.text, outcome.message], fake.issued())


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_privileged_refresh_keeps_the_file_owner(fake: FakeOAuthServer, creds: Path) -> None:
    due_login(fake, creds)
    os.chown(creds, 4321, 4321)
    assert refresh(creds, options(fake)).result is Result.REFRESHED
    st = creds.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4321, 0o600)


def test_answer_without_lifetime_assumes_a_short_one(fake: FakeOAuthServer, creds: Path) -> None:
    """The new tokens are saved (the old refresh token is spent) with an expiry early enough to refresh soon."""
    due_login(fake, creds)
    fake.script(
        Scripted(200, {"access_token": "sk-ant-oat01-test-nolife", "refresh_token": "sk-ant-ort01-test-nolife"})
    )
    before = now_ms()
    outcome = refresh(creds, options(fake))
    assert outcome.result is Result.REFRESHED and "assumed 1h" in outcome.message
    oauth = read_oauth(creds)
    assert (oauth["accessToken"], oauth["refreshToken"]) == ("sk-ant-oat01-test-nolife", "sk-ant-ort01-test-nolife")
    assert before + HOUR_MS <= oauth["expiresAt"] <= now_ms() + HOUR_MS
