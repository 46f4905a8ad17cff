"""Where the upstream credential comes from, read cheaply and fresh.

Priority (as the original proxy): a Console API key, then an explicit OAuth access token, then the Claude Code
credentials file. The file is re-read only when it changed (inode, size or mtime differ), so a token rewritten by
`claude-proxy refresh` is used by the next request without a restart and without a parse per request.

Nothing here logs, prints or puts a token into an exception message.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

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
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)):
        raise MalformedCredentials(f"{source}: claudeAiOauth.expiresAt must be a number (ms since the epoch)")
    sub = oauth.get("subscriptionType")
    return OAuthFile(
        access_token=access.strip(),
        refresh_token=refresh or None,
        expires_at_ms=int(expires) if expires is not None else None,
        subscription_type=sub if isinstance(sub, str) else None,
        document=document,
    )


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a partial one.

    Temp file in the same directory (same filesystem), fsync, chmod, rename, then fsync the directory.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
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


class CredentialResolver:
    """Resolves the credential for each upstream call.

    Env-provided credentials are fixed; the file is stat()ed per call and parsed again only when it changed.
    Thread-safe (the CLI and the app may share it).
    """

    def __init__(self, api_key: str | None, access_token: str | None, path: Path) -> None:
        self._api_key = api_key
        self._access_token = access_token
        self.path = path
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._cached: Credential | None = None

    @property
    def uses_file(self) -> bool:
        return not self._api_key and not self._access_token

    def resolve(self) -> Credential:
        if self._api_key:
            return Credential(CredentialKind.API_KEY, self._api_key, "ANTHROPIC_API_KEY")
        if self._access_token:
            return Credential(CredentialKind.ACCESS_TOKEN, self._access_token, "CLAUDE_ACCESS_TOKEN")
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
            raise MissingCredentials(f"no credentials: {self.path} does not exist; {CONFIGURE_HINT}") from None
        except OSError as exc:
            raise MissingCredentials(f"cannot read {self.path} ({exc.strerror}); {CONFIGURE_HINT}") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cached is not None and self._cache_key == key:
                return self._cached
            try:
                with open(self.path, "rb") as fh:
                    fst = os.fstat(fh.fileno())
                    data = fh.read()
            except OSError as exc:
                raise MissingCredentials(f"cannot read {self.path} ({exc.strerror}); {CONFIGURE_HINT}") from None
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
