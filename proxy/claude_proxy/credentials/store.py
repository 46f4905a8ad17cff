"""Where the upstream credential comes from, read cheaply and fresh.

Priority (as the original proxy): a Console API key, then an explicit OAuth access token, then the Claude Code
credentials file. The file is re-read only when it changed (inode, size or mtime differ), so a token rewritten by
`claude-proxy refresh` is used by the next request without a restart and without a parse per request.

Nothing here logs, prints or puts a token into an exception message.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_proxy.config import Settings

CONFIGURE_HINT = (
    "configure one of: ANTHROPIC_API_KEY (Console API key), CLAUDE_ACCESS_TOKEN or CLAUDE_CODE_OAUTH_TOKEN "
    "(OAuth access token), or a Claude Code credentials file (CLAUDE_CREDENTIALS_PATH, $CLAUDE_CONFIG_DIR/"
    ".credentials.json or ~/.claude/.credentials.json, written by `claude auth login`)"
)


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    ACCESS_TOKEN = "access_token"
    OAUTH_FILE = "oauth_file"


class CredentialsError(Exception):
    """No usable credential. Messages name files and variables, never secrets."""


class MissingCredentials(CredentialsError):
    pass


class UnreadableCredentials(MissingCredentials):
    """The file is there but cannot be read (permissions, a directory in its place, an I/O error)."""


class MalformedCredentials(CredentialsError):
    pass


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    token: str = field(repr=False)
    source: str
    expires_at: float | None = None  # epoch seconds; None when unknown or not expiring
    subscription_type: str | None = None

    @property
    def is_oauth(self) -> bool:
        return self.kind is not CredentialKind.API_KEY

    def expired(self, now: float | None = None, leeway: float = 0.0) -> bool:
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) + leeway >= self.expires_at

    def auth_headers(self) -> dict[str, str]:
        if self.kind is CredentialKind.API_KEY:
            return {"x-api-key": self.token}
        return {"authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class OAuthFile:
    """The parsed `claudeAiOauth` part of a credentials file, plus the whole document (to preserve unknown keys)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at_ms: int | None
    subscription_type: str | None
    document: dict[str, Any] = field(repr=False)


def parse_credentials(data: bytes | str, source: str) -> OAuthFile:
    """Parse a Claude Code credentials file. Raises MalformedCredentials naming `source` (never the content)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedCredentials(f"{source} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise MalformedCredentials(f"{source} must hold a JSON object")
    oauth = document.get("claudeAiOauth")
    if not isinstance(oauth, dict):
        raise MalformedCredentials(f"{source} has no 'claudeAiOauth' object")
    access = oauth.get("accessToken")
    if not isinstance(access, str) or not access.strip():
        raise MalformedCredentials(f"{source}: claudeAiOauth.accessToken is missing or empty")
    refresh = oauth.get("refreshToken")
    if refresh is not None and not isinstance(refresh, str):
        raise MalformedCredentials(f"{source}: claudeAiOauth.refreshToken must be a string")
    expires = oauth.get("expiresAt")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int | float) or not math.isfinite(expires)
    ):
        raise MalformedCredentials(f"{source}: claudeAiOauth.expiresAt must be a number (ms since the epoch)")
    sub = oauth.get("subscriptionType")
    return OAuthFile(
        access_token=access.strip(),
        refresh_token=refresh or None,
        expires_at_ms=int(expires) if expires is not None else None,
        subscription_type=sub if isinstance(sub, str) else None,
        document=document,
    )


def with_new_tokens(
    document: dict[str, Any], access_token: str, refresh_token: str | None, expires_at_ms: int
) -> dict[str, Any]:
    """A copy of a credentials document with new tokens and expiry; every other key is kept as it was.

    A `refresh_token` of None keeps the stored one (token endpoints may omit it when they do not rotate).
    """
    updated = copy.deepcopy(document)
    oauth = updated.setdefault("claudeAiOauth", {})
    oauth["accessToken"] = access_token
    if refresh_token:
        oauth["refreshToken"] = refresh_token
    oauth["expiresAt"] = int(expires_at_ms)
    return updated


def dump_credentials(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def lock_path(path: Path) -> Path:
    """The sibling file every writer of `path` locks (never the credentials file itself, which is replaced)."""
    return path.with_name(path.name + ".lock")


class LockTimeout(TimeoutError):
    pass


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float, poll: float = 0.1) -> Iterator[float]:
    """Hold an exclusive flock on `lock_path(path)` for the block; yields the seconds spent waiting.

    The lock file is created (0600) when missing and never removed: removing it would let a waiter lock an
    unlinked inode while a newcomer locks a new file. The kernel drops the lock when the process dies.
    Raises LockTimeout after `timeout` seconds, OSError when the lock file cannot be opened.
    """
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        start = time.monotonic()
        pause = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start >= timeout:
                    raise LockTimeout(f"{lock_path(path)} is held by another process") from None
                time.sleep(pause)
                pause = min(poll, pause * 2)
        try:
            yield time.monotonic() - start
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


TEMP_SUFFIX = ".tmp"


def remove_stale_temp_files(path: Path) -> int:
    """Delete temp files a killed writer left next to `path`. Call only while holding `exclusive_lock(path)`."""
    removed = 0
    prefix = temp_prefix(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)
                removed += 1
    return removed


class AtomicWriter:
    """Replace a file so that readers see the old or the new content, never a partial one.

    The temp file is created (and, where the filesystem supports it, `reserve` bytes are allocated) when the
    writer is made, so a caller can prove the directory is writable *before* doing something that cannot be
    undone (a refresh grant consumes the old refresh token) and only then `commit`: write, truncate, fchmod,
    fsync, rename over the target, fsync the directory. `abort` (or leaving the `with` block without
    committing) removes the temp file and leaves the target untouched. With `owner` (uid, gid) the new file keeps
    the owner of the one it replaces, where the process may change it.
    """

    def __init__(self, path: Path, mode: int = 0o600, reserve: int = 0, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.mode = mode
        self.owner = owner
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
        self._fd: int | None = fd
        self._tmp: str | None = tmp
        try:
            os.fchmod(fd, mode)
            if reserve > 0:
                try:
                    os.posix_fallocate(fd, 0, reserve)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
        except BaseException:
            self.abort()
            raise

    def commit(self, data: bytes) -> None:
        if self._fd is None or self._tmp is None:
            raise RuntimeError("AtomicWriter already finished")
        fd, tmp = self._fd, self._tmp
        try:
            view = memoryview(data)
            offset = 0
            while offset < len(view):
                offset += os.pwrite(fd, view[offset:], offset)
            os.ftruncate(fd, len(data))
            if self.owner is not None and self.owner != (os.geteuid(), os.getegid()):
                # Keep the file readable by its owner (the proxy) when a privileged user rewrites it.
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, *self.owner)
            os.fchmod(fd, self.mode)
            os.fsync(fd)
            os.close(fd)
            self._fd = None
            os.replace(tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        _fsync_directory(self.path.parent)

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _fsync_directory(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a partial one.

    Temp file in the same directory (same filesystem), fsync, chmod, rename, then fsync the directory.
    """
    with AtomicWriter(path, mode) as writer:
        writer.commit(data)


class CredentialResolver:
    """Resolves the credential for each upstream call.

    Env-provided credentials are fixed; the file is stat()ed per call and parsed again only when it changed.
    Thread-safe (the CLI and the app may share it).
    """

    def __init__(
        self,
        api_key: str | None,
        access_token: str | None,
        path: Path,
        *,
        token_variable: str = "CLAUDE_ACCESS_TOKEN",
        empty: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        # Credential variables set to an empty value: ignored, and named when nothing resolves.
        self.empty = empty
        # A credential from the environment never changes: one object, handed out on every call.
        self._fixed: Credential | None = None
        if api_key:
            self._fixed = Credential(CredentialKind.API_KEY, api_key, "ANTHROPIC_API_KEY")
        elif access_token:
            self._fixed = Credential(CredentialKind.ACCESS_TOKEN, access_token, token_variable)
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._cached: Credential | None = None

    @classmethod
    def from_settings(cls, settings: Settings, path: Path | None = None) -> CredentialResolver:
        """The resolver the settings describe (`path` instead of theirs, for `check --credentials`)."""
        return cls(
            settings.api_key,
            settings.access_token,
            settings.credentials_path if path is None else path,
            token_variable=settings.access_token_variable,
            empty=settings.empty_credentials,
        )

    @property
    def uses_file(self) -> bool:
        return self._fixed is None

    def resolve(self) -> Credential:
        if self._fixed is not None:
            return self._fixed
        return self._from_file()

    def invalidate(self) -> None:
        """Forget the cached parse, so the next resolve() reads the file again (e.g. after a 401)."""
        with self._lock:
            self._cache_key = None
            self._cached = None

    def _from_file(self) -> Credential:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise MissingCredentials(f"no credentials: {self.path} does not exist{self._hint()}") from None
        except OSError as exc:
            raise UnreadableCredentials(f"cannot read {self.path} ({exc.strerror}){self._hint()}") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cached is not None and self._cache_key == key:
                return self._cached
            try:
                with open(self.path, "rb") as fh:
                    fst = os.fstat(fh.fileno())
                    data = fh.read()
            except OSError as exc:
                raise UnreadableCredentials(f"cannot read {self.path} ({exc.strerror}){self._hint()}") from None
            parsed = parse_credentials(data, str(self.path))
            credential = Credential(
                CredentialKind.OAUTH_FILE,
                parsed.access_token,
                str(self.path),
                expires_at=parsed.expires_at_ms / 1000 if parsed.expires_at_ms is not None else None,
                subscription_type=parsed.subscription_type,
            )
            self._cache_key = (fst.st_ino, fst.st_size, fst.st_mtime_ns)
            self._cached = credential
            return credential

    def _hint(self) -> str:
        empty = (
            f"; {' and '.join(self.empty)} {'is' if len(self.empty) == 1 else 'are'} set but empty"
            if self.empty
            else ""
        )
        return f"{empty}; {CONFIGURE_HINT}"
