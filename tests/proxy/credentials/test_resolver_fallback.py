"""The file caught in a bad moment: the last good credential stands in for a bounded time (said once in the log),
a file too large to be a credentials file is refused unread, looks from the event loop run in a worker thread, and a
readable-by-others file holding a refresh token is named."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from claude_proxy.credentials import resolver as resolver_module
from claude_proxy.credentials.resolver import (
    MAX_FILE_BYTES,
    CredentialKind,
    CredentialResolver,
    MalformedCredentials,
    MissingCredentials,
    OversizedCredentials,
    UnreadableCredentials,
    exposure_warning,
)
from claude_proxy.upstream.api import OAUTH_BETA, build_headers

GOOD = {
    "claudeAiOauth": {"accessToken": "sk-ant-oat01-good", "refreshToken": "sk-ant-ort01-r", "expiresAt": 4102444800000}
}


def write_good(path: Path, token: str = "sk-ant-oat01-good") -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["claudeAiOauth"]["accessToken"] = token
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fallback_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "claude_proxy.credentials.resolver" and r.levelno >= logging.WARNING]


def test_a_half_written_file_is_bridged_by_the_last_good_credential_for_the_grace_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    path = tmp_path / ".credentials.json"
    write_good(path)
    clock = Clock()
    resolver = CredentialResolver(None, None, path, recheck=1.0, grace=300.0, clock=clock)
    assert resolver.resolve().token == "sk-ant-oat01-good"
    assert resolver.fallback_note() is None

    path.write_text('{"claudeAiOauth": {"accessTo')  # an outside writer caught halfway through
    for _ in range(5):  # every look for 236 s from the first bad one: the last good token, one warning in all
        clock.now += 59.0
        assert resolver.resolve().token == "sk-ant-oat01-good"
    (warning,) = fallback_records(caplog)
    assert warning.levelno == logging.WARNING
    assert "not valid JSON" in warning.getMessage() and "last good credential" in warning.getMessage()
    note = resolver.fallback_note()
    assert note is not None and "last good credential" in note and "not valid JSON" in note

    clock.now += 70.0  # 306 s since the first bad look: the grace is over, the file's own error again
    with pytest.raises(MalformedCredentials, match="not valid JSON"):
        resolver.resolve()
    assert resolver.fallback_note() is None
    assert [r.levelno for r in fallback_records(caplog)] == [logging.WARNING, logging.ERROR]

    write_good(path, "sk-ant-oat01-new")  # mended: the new token at once, and a new episode may bridge again
    assert resolver.resolve().token == "sk-ant-oat01-new"
    path.write_text("")
    clock.now += 2.0
    assert resolver.resolve().token == "sk-ant-oat01-new"
    assert len(fallback_records(caplog)) == 3
    assert all("sk-ant-o" not in r.getMessage() for r in caplog.records)


def test_an_unreadable_file_is_bridged_too(tmp_path: Path) -> None:
    path = tmp_path / ".credentials.json"
    write_good(path)
    clock = Clock()
    resolver = CredentialResolver(None, None, path, recheck=1.0, grace=60.0, clock=clock)
    resolver.resolve()
    path.unlink()
    path.mkdir()  # read() fails with EISDIR, even for root (permission bits would not stop root)
    clock.now += 5.0
    assert resolver.resolve().token == "sk-ant-oat01-good"
    assert "cannot read" in (resolver.fallback_note() or "")
    clock.now += 61.0
    with pytest.raises(UnreadableCredentials):
        resolver.resolve()


def test_without_a_grace_or_with_the_file_gone_there_is_no_bridge(tmp_path: Path) -> None:
    path = tmp_path / ".credentials.json"
    write_good(path)
    clock = Clock()
    strict = CredentialResolver(None, None, path, recheck=1.0, grace=0.0, clock=clock)
    bridged = CredentialResolver(None, None, path, recheck=1.0, grace=300.0, clock=clock)
    strict.resolve(), bridged.resolve()
    path.write_text("{")
    clock.now += 2.0
    with pytest.raises(MalformedCredentials):
        strict.resolve()
    path.unlink()  # a logout, not a hiccup
    with pytest.raises(MissingCredentials, match="does not exist"):
        bridged.resolve()
    # Nothing good was ever read: nothing to stand in.
    path.write_text("{")
    with pytest.raises(MalformedCredentials):
        CredentialResolver(None, None, path, grace=300.0).resolve()


def test_a_file_over_the_cap_is_refused_without_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".credentials.json"
    with open(path, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # 50 MB, sparse
    reads: list[object] = []
    monkeypatch.setattr(resolver_module, "parse_credentials", lambda *a: reads.append(a))
    with pytest.raises(OversizedCredentials, match=r"52428800 bytes.*1024 KiB at most"):
        CredentialResolver(None, None, path).resolve()
    assert reads == []
    with open(path, "r+b") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(OversizedCredentials):
        resolver_module.read_credentials_file(path)


def test_the_server_side_look_runs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".credentials.json"
    write_good(path)
    parsed_on: list[int] = []
    real = resolver_module.parse_credentials

    def spy(data: bytes, source: str) -> object:
        parsed_on.append(threading.get_ident())
        return real(data, source)

    monkeypatch.setattr(resolver_module, "parse_credentials", spy)
    resolver = CredentialResolver(None, None, path, recheck=1.0)

    async def main() -> tuple[int, str, str]:
        first = await resolver.resolve_async()
        second = await resolver.resolve_async()  # within the recheck interval: no look at all
        return threading.get_ident(), first.token, second.token

    loop_thread, first, second = asyncio.run(main())
    assert first == second == "sk-ant-oat01-good"
    assert len(parsed_on) == 1 and parsed_on[0] != loop_thread


def test_an_oauth_token_in_anthropic_api_key_is_sent_as_a_bearer_token() -> None:
    credential = CredentialResolver("sk-ant-oat01-abc", None, None).resolve()
    assert credential.kind is CredentialKind.ACCESS_TOKEN and credential.source == "ANTHROPIC_API_KEY"
    headers = build_headers(credential)
    assert headers["authorization"] == "Bearer sk-ant-oat01-abc" and "x-api-key" not in headers
    assert OAUTH_BETA in headers["anthropic-beta"].split(",")
    assert "Bearer token" in credential.described
    console = CredentialResolver("sk-ant-api03-abc", None, None).resolve()
    assert console.kind is CredentialKind.API_KEY and build_headers(console)["x-api-key"] == "sk-ant-api03-abc"


@pytest.mark.parametrize(
    ("mode", "refresh", "warned"),
    [
        (0o644, True, "its group and every user (mode 0644)"),
        (0o640, True, "its group (mode 0640)"),
        (0o604, True, "every user (mode 0604)"),
        (0o600, True, None),
        (0o644, False, None),
    ],
)
def test_a_refresh_token_readable_by_others_is_named(
    tmp_path: Path, mode: int, refresh: bool, warned: str | None
) -> None:
    path = tmp_path / ".credentials.json"
    doc = json.loads(json.dumps(GOOD))
    if not refresh:
        del doc["claudeAiOauth"]["refreshToken"]
    path.write_text(json.dumps(doc))
    os.chmod(path, mode)
    warning = exposure_warning(path)
    if warned is None:
        assert warning is None
    else:
        assert warning is not None and warned in warning and f"chmod 600 {path}" in warning
        assert "sk-ant-o" not in warning
