"""The credentials file's tools, for the CLI's `refresh` and `seed`: new tokens into a copy of the document (unknown
keys kept), an exclusive lock beside the file, and atomic rewrites (temp file, fsync, rename; owner-only mode).

A credentials path that is a symbolic link (e.g. ~/.claude/.credentials.json pointing into a dotfiles or secrets
directory) stays one: the lock, the temp file and the rename all happen beside the file the link points to, so the
link is kept and its target gets the new login.

Nothing here logs, prints or puts a token into an exception message.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


def real_path(path: Path) -> Path:
    """The file `path` names once every symbolic link is followed (itself when it is none), where writes go."""
    return Path(os.path.realpath(path))


def lock_path(path: Path) -> Path:
    """The sibling file every writer of `path` locks (never the credentials file itself, which is replaced); beside
    the link's target when `path` is a link, so writers through the link and through the target share one lock."""
    target = real_path(path)
    return target.with_name(target.name + ".lock")


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
    path = real_path(path)
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

    A symbolic link is followed: the temp file is made in the target's directory and renamed over the target, so
    the link stays. Without `mode`, the new file keeps the mode of the one it replaces less any group and other
    bits (a file holding a refresh token is never written readable by others), and 0600 when there is none.
    """

    def __init__(
        self, path: Path, mode: int | None = None, reserve: int = 0, owner: tuple[int, int] | None = None
    ) -> None:
        self.path = real_path(path)
        path = self.path
        self.mode = kept_mode(path) if mode is None else mode
        self.owner = owner
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
        self._fd: int | None = fd
        self._tmp: str | None = tmp
        try:
            os.fchmod(fd, self.mode)
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


def kept_mode(path: Path) -> int:
    """The owner's permission bits of the file at `path` (0600 when it is missing, or would end up unreadable)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o700
    except OSError:
        return 0o600
    return mode if mode & 0o400 else 0o600


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
