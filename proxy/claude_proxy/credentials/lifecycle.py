"""The credentials lifecycle: `refresh`, `seed` and `check`, as functions returning an outcome value.

Refresh tokens rotate: the grant spends the stored refresh token, so two refreshers of one file, or a refresher
that cannot save what it got, lose the login. Hence the order of a refresh:

1. read the file; if the access token is valid for longer than `before` (and not forced): skip, no lock needed;
2. take the exclusive lock (sibling `.lock` file), remove temp files a killed writer left, read the file *again*
   and decide again (a refresher that waited for the lock finds the token its peer just got, and skips);
3. create the temp file next to the target (proving the directory is writable) before spending the token;
4. the grant; on any failure the temp file is dropped and the credentials file is untouched;
5. write the new tokens into a copy of the document (all other keys kept), fsync, rename, release the lock.

A kill at any point leaves the old or the new file (rename is atomic). A kill between the endpoint's answer and
the rename loses the answer, and with it the login: no client of a rotating token endpoint can avoid that.

Nothing here puts a token into an outcome, a message or a log record.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import httpx

from claude_proxy.credentials.oauth import (
    DEFAULT_CLIENT_ID,
    DEFAULT_TOKEN_URL,
    REFRESH_RETRY,
    OAuthError,
    refresh_grant,
)
from claude_proxy.credentials.resolver import (
    MAX_FILE_BYTES,
    Credential,
    CredentialKind,
    CredentialResolver,
    CredentialsError,
    MalformedCredentials,
    MissingCredentials,
    OAuthFile,
    OversizedCredentials,
    UnreadableCredentials,
    exposure_warning,
    parse_credentials,
    read_credentials_file,
)
from claude_proxy.credentials.store import (
    AtomicWriter,
    LockTimeout,
    dump_credentials,
    exclusive_lock,
    remove_stale_temp_files,
    with_new_tokens,
)
from claude_proxy.retry import RetryPolicy

log = logging.getLogger(__name__)

TERMINATION_LOG = "/dev/termination-log"
RELOGIN_HINT = "run `claude auth login` on a workstation and seed the new credentials file again"


class Result(StrEnum):
    REFRESHED = "refreshed"
    COPIED = "copied"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What a lifecycle command did. Serialised as the one JSON line the command prints."""

    command: str
    result: Result
    reason: str
    message: str
    expires_at_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.result is not Result.FAILED

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, str | None]:
        return {
            "command": self.command,
            "result": self.result.value,
            "reason": self.reason,
            "message": self.message,
            "expiresAt": rfc3339(self.expires_at_ms),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def rfc3339(expires_at_ms: int | float | None) -> str | None:
    if expires_at_ms is None:
        return None
    try:
        return datetime.fromtimestamp(expires_at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def emit(outcome: Outcome, stream_write: Callable[[str], object], termination_log: str | None) -> None:
    """Print the outcome line and, when the termination log exists and is writable, write it there too.

    The termination log is opened without O_CREAT: outside Kubernetes nothing is created under /dev.
    """
    line = outcome.to_json()
    stream_write(line + "\n")
    if not termination_log:
        return
    try:
        fd = os.open(termination_log, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    except OSError as exc:
        log.debug("cannot write %s (%s)", termination_log, exc.strerror)
    finally:
        os.close(fd)


def _read(path: Path) -> tuple[bytes | None, str | None]:
    """(content, None) or (None, reason) with reason `missing`, `unreadable` or `too_large` (over MAX_FILE_BYTES:
    refused unread)."""
    try:
        return read_credentials_file(path), None
    except OversizedCredentials:
        return None, "too_large"
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        log.debug("cannot read %s (%s)", path, exc.strerror)
        return None, "unreadable"


def _owner(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def _expiry(parsed: OAuthFile) -> int | None:
    return parsed.expires_at_ms


def _time_left(expires_at_ms: int | None, now: float) -> str:
    if expires_at_ms is None:
        return "unknown"
    return _duration(expires_at_ms / 1000 - now)


def _duration(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(int(seconds)), 3600)
    return f"{sign}{hours}h{rest // 60:02d}m"


# --------------------------------------------------------------------------------------------------- refresh


@dataclass(frozen=True)
class RefreshOptions:
    before_seconds: float = 3600.0
    force: bool = False
    token_url: str = DEFAULT_TOKEN_URL
    client_id: str = DEFAULT_CLIENT_ID
    timeout: float = 30.0  # per HTTP attempt
    retry: RetryPolicy = REFRESH_RETRY
    lock_timeout: float = 300.0


def _is_due(parsed: OAuthFile, before_seconds: float, now: float) -> bool:
    if parsed.expires_at_ms is None:
        return True
    return parsed.expires_at_ms / 1000 - now <= before_seconds


def refresh(
    path: Path,
    options: RefreshOptions | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    options = options or RefreshOptions()
    failed = _refresh_failed

    # A first look without the lock: the common case (not due) needs no write access at all.
    loaded = _load_for_refresh(path)
    if isinstance(loaded, Outcome):
        return loaded
    _, parsed = loaded
    if not options.force and not _is_due(parsed, options.before_seconds, clock()):
        return _not_due(parsed, clock())

    try:
        with exclusive_lock(path, options.lock_timeout) as waited:
            if waited > 0.5:
                log.info("waited %.1fs for the credentials lock", waited)
            removed = remove_stale_temp_files(path)
            if removed:
                log.info("removed %d temp file(s) left by an interrupted writer", removed)
            return _refresh_locked(path, options, transport, clock, sleep, waited_for_peer=waited > 0.05)
    except LockTimeout:
        return failed(
            "locked",
            f"another process held the lock on {path} for more than {options.lock_timeout:.0f}s; nothing changed",
            _expiry(parsed),
        )
    except OSError as exc:
        return failed("not_writable", f"cannot lock {path} ({exc.strerror}); nothing changed", _expiry(parsed))


def _refresh_failed(reason: str, message: str, expires_at_ms: int | None = None) -> Outcome:
    return Outcome("refresh", Result.FAILED, reason, message, expires_at_ms)


def _load_for_refresh(path: Path) -> tuple[bytes, OAuthFile] | Outcome:
    """The credentials file's bytes and parse, or the failed outcome that says why it cannot be refreshed."""
    data, problem = _read(path)
    if data is None:
        return _refresh_failed(problem or "missing", _unreadable_message(path, problem))
    try:
        return data, parse_credentials(data, str(path))
    except MalformedCredentials as exc:
        return _refresh_failed("malformed", f"{exc}; {RELOGIN_HINT}")


def _not_due(parsed: OAuthFile, now: float, note: str = "") -> Outcome:
    return Outcome(
        "refresh",
        Result.SKIPPED,
        "not_due",
        f"access token is valid for {_time_left(parsed.expires_at_ms, now)} more{note}; nothing to do",
        parsed.expires_at_ms,
    )


def _unreadable_message(path: Path, problem: str | None) -> str:
    if problem == "missing":
        return (
            f"{path} does not exist: on a workstation, run `claude auth login` (it writes this file); "
            "on a shared volume, seed it first (`claude-proxy seed`)"
        )
    if problem == "too_large":
        return f"{path} is larger than a credentials file can be ({MAX_FILE_BYTES // 1024} KiB at most); not read"
    return f"{path} cannot be read (check its permissions and owner)"


def _refresh_locked(
    path: Path,
    options: RefreshOptions,
    transport: httpx.BaseTransport | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    waited_for_peer: bool,
) -> Outcome:
    failed = _refresh_failed
    loaded = _load_for_refresh(path)  # again, under the lock: a peer may have refreshed while we waited
    if isinstance(loaded, Outcome):
        return loaded
    data, parsed = loaded
    expires = _expiry(parsed)
    if not options.force and not _is_due(parsed, options.before_seconds, clock()):
        note = " (renewed by another refresher meanwhile)" if waited_for_peer else ""
        return _not_due(parsed, clock(), note)
    if not parsed.refresh_token:
        return failed(
            "no_refresh_token",
            f"{path} holds no refresh token (a `claude setup-token` token cannot be refreshed); {RELOGIN_HINT}",
            expires,
        )
    reason = "forced" if options.force else "due"

    try:
        writer = AtomicWriter(path, reserve=len(data) + 8192, owner=_owner(path))
    except OSError as exc:
        return failed("not_writable", f"cannot write next to {path} ({exc.strerror}); nothing changed", expires)
    with writer:
        try:
            with httpx.Client(
                transport=transport, timeout=httpx.Timeout(options.timeout), follow_redirects=False
            ) as client:
                log.debug("refreshing %s against %s", path, options.token_url)
                tokens = refresh_grant(
                    client, options.token_url, options.client_id, parsed.refresh_token, options.retry, sleep
                )
        except OAuthError as exc:
            message = f"{exc}; {path} unchanged"
            if exc.reason == "invalid_grant":
                message = f"the login is no longer valid ({exc}); {RELOGIN_HINT}; {path} unchanged"
            return failed(exc.reason, message, expires)

        now = clock()
        note = ""
        expires_in = tokens.expires_in
        if expires_in is None:
            expires_in = 3600.0
            note = " (the endpoint gave no lifetime; assumed 1h so the next run refreshes early)"
        new_expires = int((now + expires_in) * 1000)
        document = with_new_tokens(parsed.document, tokens.access_token, tokens.refresh_token, new_expires)
        try:
            writer.commit(dump_credentials(document))
        except OSError as exc:
            return failed(
                "write_failed",
                f"new tokens were issued but could not be saved to {path} ({exc.strerror}); the stored refresh "
                f"token is probably spent: {RELOGIN_HINT}",
                expires,
            )
    rotated = "rotated" if tokens.refresh_token else "kept"
    return Outcome(
        "refresh",
        Result.REFRESHED,
        reason,
        f"new access token valid for {_time_left(new_expires, now)}, refresh token {rotated}{note}",
        new_expires,
    )


# ------------------------------------------------------------------------------------------------ keep alive

# Outcomes no later run can mend: the login itself is gone, someone must log in again.
PERMANENT_FAILURES = frozenset({"invalid_grant", "no_refresh_token"})
# After a failure that may pass (network, 5xx, a lock held, a file caught mid-write) the next try comes within this.
RETRY_AFTER_FAILURE = 300.0


def next_wait(outcome: Outcome, every: float, before_seconds: float, now: float, rand: Callable[[], float]) -> float:
    """Seconds until the next run of `refresh --every`: `every` give or take 10% (so refreshers of many files do not
    move in step), sooner when the token falls due before that (a little after it does), and at most
    RETRY_AFTER_FAILURE after a failure that may pass."""
    wait = every * (0.9 + 0.2 * rand())
    if not outcome.ok:
        return min(wait, RETRY_AFTER_FAILURE * (0.9 + 0.2 * rand()))
    if outcome.expires_at_ms is not None:
        until_due = outcome.expires_at_ms / 1000 - before_seconds - now
        wait = min(wait, until_due + rand() * min(60.0, every * 0.1))
    return max(1.0, wait)


def keep_alive(
    path: Path,
    options: RefreshOptions,
    every: float,
    stop: threading.Event,
    report: Callable[[Outcome], object],
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> Outcome | None:
    """`refresh` again and again, each outcome to `report`, until `stop` is set (returns None) or the login is gone
    (returns that outcome). One refresher at a time still holds: every run takes the file's lock to refresh.
    A stop asked for during a run lets the run finish, so new tokens are never lost between the grant and the write.
    """

    def pause(seconds: float) -> None:  # a back-off between tries of the grant, cut short by a stop
        stop.wait(seconds)

    while not stop.is_set():
        outcome = refresh(path, options, transport=transport, clock=clock, sleep=pause)
        report(outcome)
        if outcome.reason in PERMANENT_FAILURES:
            return outcome
        wait = next_wait(outcome, every, options.before_seconds, clock(), rand)
        log.debug("next look at %s in %.0fs", path, wait)
        stop.wait(wait)
    return None


# ------------------------------------------------------------------------------------------------------ seed


def seed(source: Path, target: Path, force: bool = False, lock_timeout: float = 300.0) -> Outcome:
    """Install `source` (e.g. a read-only Secret mount) at `target` unless the target is as new or newer."""

    def failed(reason: str, message: str, expires_at_ms: int | None = None) -> Outcome:
        return Outcome("seed", Result.FAILED, reason, message, expires_at_ms)

    data, problem = _read(source)
    if data is None:
        said = {"missing": "does not exist", "too_large": f"is larger than {MAX_FILE_BYTES // 1024} KiB; not read"}
        return failed(problem or "missing", f"source {source} {said.get(problem or '', 'cannot be read')}")
    try:
        src = parse_credentials(data, f"source {source}")
    except MalformedCredentials as exc:
        return failed("malformed", str(exc))
    if not src.refresh_token:
        return failed("malformed", f"source {source}: claudeAiOauth.refreshToken is missing")
    if src.expires_at_ms is None:
        return failed("malformed", f"source {source}: claudeAiOauth.expiresAt is missing")

    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with exclusive_lock(target, lock_timeout):
            remove_stale_temp_files(target)
            return _seed_locked(data, src, source, target, force)
    except LockTimeout:
        return failed("locked", f"another process held the lock on {target} for more than {lock_timeout:.0f}s")
    except OSError as exc:
        return failed("not_writable", f"cannot write {target} ({exc.strerror}); nothing changed")


def _seed_locked(data: bytes, src: OAuthFile, source: Path, target: Path, force: bool) -> Outcome:
    existing, problem = _read(target)
    current: OAuthFile | None = None
    if existing is not None:
        try:
            current = parse_credentials(existing, str(target))
        except MalformedCredentials:
            problem = "malformed"
    src_expiry = src.expires_at_ms
    assert src_expiry is not None

    if force:
        reason = "forced"
    elif current is None:
        reason = problem or "missing"
    elif current.expires_at_ms is None or current.expires_at_ms < src_expiry:
        reason = "source_newer"
    elif current.expires_at_ms == src_expiry:
        return Outcome(
            "seed", Result.SKIPPED, "up_to_date", f"{target} already holds these credentials", current.expires_at_ms
        )
    else:
        return Outcome(
            "seed",
            Result.SKIPPED,
            "target_newer",
            f"{target} holds newer credentials (expiry {rfc3339(current.expires_at_ms)}) than {source} "
            f"({rfc3339(src_expiry)}); kept them",
            current.expires_at_ms,
        )

    with AtomicWriter(target, owner=_owner(target) if existing is not None else None) as writer:
        writer.commit(data)
    why = {
        "forced": "forced",
        "missing": "target was missing",
        "unreadable": "target was unreadable",
        "too_large": "target was too large to be a credentials file",
        "malformed": "target was malformed",
        "source_newer": "target was older",
    }[reason]
    return Outcome("seed", Result.COPIED, reason, f"installed {source} at {target} ({why})", src_expiry)


# ----------------------------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckReport:
    exit_code: int  # 0 valid, 1 expired, missing or unreadable, 2 malformed
    status: str  # valid | expired | missing | unreadable | malformed
    source: str | None
    kind: str | None
    expires_at_ms: int | None
    seconds_left: float | None
    subscription_type: str | None
    has_refresh_token: bool | None
    message: str
    warnings: tuple[str, ...] = ()  # e.g. a token due for refresh, a credential variable set to an empty value

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "source": self.source,
            "kind": self.kind,
            "expiresAt": rfc3339(self.expires_at_ms),
            "secondsLeft": None if self.seconds_left is None else int(self.seconds_left),
            "subscriptionType": self.subscription_type,
            "refreshToken": None
            if self.has_refresh_token is None
            else ("present" if self.has_refresh_token else "absent"),
            "message": self.message,
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        lines = [f"status:       {self.status}"]
        if self.source is not None:
            lines.append(f"source:       {self.source}")
        if self.kind is not None:
            lines.append(f"kind:         {self.kind}")
        if self.kind is not None and self.kind != CredentialKind.API_KEY:
            if self.expires_at_ms is None or self.seconds_left is None:
                lines.append("expires:      unknown")
            else:
                left = _duration(self.seconds_left)
                lines.append(f"expires:      {rfc3339(self.expires_at_ms)} ({left} left)")
        if self.subscription_type is not None:
            lines.append(f"subscription: {self.subscription_type}")
        if self.has_refresh_token is not None:
            lines.append(f"refresh:      {_presence(self.has_refresh_token)}")
        lines.append(self.message)
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


def _presence(flag: bool | None) -> str | None:
    return None if flag is None else ("present" if flag else "absent")


def check(
    resolver: CredentialResolver, clock: Callable[[], float] = time.time, due_within: float = 3600.0
) -> CheckReport:
    """Resolve exactly as the proxy does and describe the result (never the secret). A file token that expires
    within `due_within` seconds (`refresh`'s default `--before`) is valid, with a warning that it is due."""
    notes = tuple(f"{name} is set but empty, so it is ignored" for name in resolver.empty)
    path = "no credentials file" if resolver.path is None else str(resolver.path)
    try:
        credential: Credential = resolver.resolve()
    except MalformedCredentials as exc:
        return CheckReport(
            2, "malformed", path, CredentialKind.OAUTH_FILE.value, None, None, None, None, str(exc), notes
        )
    except UnreadableCredentials as exc:
        return CheckReport(1, "unreadable", path, None, None, None, None, None, str(exc), notes)
    except MissingCredentials as exc:
        return CheckReport(1, "missing", path, None, None, None, None, None, str(exc), notes)
    except CredentialsError as exc:  # pragma: no cover - every subclass is handled above
        return CheckReport(2, "malformed", path, None, None, None, None, None, str(exc), notes)

    has_refresh: bool | None = None
    if credential.kind is CredentialKind.OAUTH_FILE and resolver.path is not None:
        has_refresh = _file_has_refresh_token(resolver.path)
        exposed = exposure_warning(resolver.path)
        if exposed:
            notes += (exposed,)
    now = clock()
    expires_ms = int(credential.expires_at * 1000) if credential.expires_at is not None else None
    left = credential.expires_at - now if credential.expires_at is not None else None
    if credential.expired(now):
        status, code = "expired", 1
        message = "the access token has expired"
        if credential.kind is CredentialKind.OAUTH_FILE:
            message += "; run `claude-proxy refresh`" if has_refresh else f"; {RELOGIN_HINT}"
    else:
        status, code = "valid", 0
        message = {
            CredentialKind.API_KEY: "a Console API key (does not expire)",
            CredentialKind.ACCESS_TOKEN: "an OAuth access token from the environment (expiry unknown)",
            CredentialKind.OAUTH_FILE: "an OAuth access token from a credentials file",
        }[credential.kind]
        if credential.kind is CredentialKind.ACCESS_TOKEN and credential.source == "ANTHROPIC_API_KEY":
            message = (
                "an OAuth access token in ANTHROPIC_API_KEY (it starts with sk-ant-oat, so it is sent as a Bearer "
                "token, not as a Console API key; expiry unknown)"
            )
        if credential.kind is CredentialKind.OAUTH_FILE and left is not None and left <= due_within:
            todo = "run `claude-proxy refresh` (or let the scheduled refresh do it)" if has_refresh else RELOGIN_HINT
            notes += (f"the access token expires within {_duration(due_within)} and is due for refresh: {todo}",)
    return CheckReport(
        code,
        status,
        credential.source,
        credential.kind.value,
        expires_ms,
        left,
        credential.subscription_type,
        has_refresh,
        message,
        notes,
    )


def _file_has_refresh_token(path: Path) -> bool | None:
    data, _ = _read(path)
    if data is None:
        return None
    try:
        return parse_credentials(data, str(path)).refresh_token is not None
    except MalformedCredentials:
        return None
