"""Where the upstream credential comes from, read cheaply and fresh: the resolver every upstream attempt asks.

Priority (as the original proxy): a Console API key, then an explicit OAuth access token, then the Claude Code
credentials file. The file is looked at (one `stat`) at most once per `recheck` seconds, and parsed again only when
it changed (inode, size or mtime differ), so a token rewritten by `claude-proxy refresh` is used within a second,
without a restart, without a parse per request and without a system call on the event loop for every attempt. A 401
from Anthropic makes the upstream layer `invalidate()` and look again at once.

Nothing here logs, prints or puts a token into an exception message.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# How long the proxy trusts its last look at the credentials file.
RECHECK_SECONDS = 1.0

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


class CredentialResolver:
    """Resolves the credential for each upstream call.

    Env-provided credentials are fixed; the file is stat()ed at most once per `recheck` seconds (0: on every call)
    and parsed again only when it changed; a `path` of None means there is no file to look at. Thread-safe (the CLI
    and the app may share it).
    """

    def __init__(
        self,
        api_key: str | None,
        access_token: str | None,
        path: Path | None,
        *,
        token_variable: str = "CLAUDE_ACCESS_TOKEN",
        empty: tuple[str, ...] = (),
        recheck: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.recheck = recheck
        self._clock = clock
        self._fresh_until = 0.0  # the last look at the file holds until then
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

    def resolve(self) -> Credential:
        if self._fixed is not None:
            return self._fixed
        cached = self._cached
        if cached is not None and self.recheck > 0 and self._clock() < self._fresh_until:
            return cached  # looked at the file less than `recheck` seconds ago
        return self._from_file()

    def invalidate(self) -> None:
        """Forget the cached parse, so the next resolve() reads the file again (e.g. after a 401)."""
        with self._lock:
            self._cache_key = None
            self._cached = None
            self._fresh_until = 0.0

    def _from_file(self) -> Credential:
        if self.path is None:
            raise MissingCredentials(f"no credentials{self._hint()}")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise MissingCredentials(f"no credentials: {self.path} does not exist{self._hint()}") from None
        except OSError as exc:
            raise UnreadableCredentials(f"cannot read {self.path} ({exc.strerror}){self._hint()}") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cached is not None and self._cache_key == key:
                self._fresh_until = self._clock() + self.recheck
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
            self._fresh_until = self._clock() + self.recheck
            return credential

    def _hint(self) -> str:
        empty = (
            f"; {' and '.join(self.empty)} {'is' if len(self.empty) == 1 else 'are'} set but empty"
            if self.empty
            else ""
        )
        return f"{empty}; {CONFIGURE_HINT}"
