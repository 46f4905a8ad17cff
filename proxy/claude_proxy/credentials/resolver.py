"""Where the upstream credential comes from, read cheaply and fresh: the resolver every upstream attempt asks.

Priority (as the original proxy): a Console API key, then an explicit OAuth access token, then the Claude Code
credentials file. The file is looked at (one `stat`) at most once per `recheck` seconds, and parsed again only when
it changed (inode, size or mtime differ), so a token rewritten by `claude-proxy refresh` is used within a second,
without a restart, without a parse per request and without a system call on the event loop for every attempt. A 401
from Anthropic makes the upstream layer `invalidate()` and look again at once. The server asks through
`resolve_async`, which does its looks in a worker thread, so no read or parse of the file ever runs on the event loop;
and a file larger than `MAX_FILE_BYTES` is refused from its `stat`, without being read.

A file that cannot be read or does not parse (a permission changed, an outside writer caught halfway through a
non-atomic rewrite) does not take the proxy down at once: for up to `grace` seconds it keeps answering with the last
credential it read well, says so once in the log (a warning) and in `fallback_note()` (for /readyz), and picks the
file up again as soon as it reads well. A file that is gone is not covered: that is a logout, not a hiccup.

Nothing here logs, prints or puts a token into an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# How long the proxy trusts its last look at the credentials file.
RECHECK_SECONDS = 1.0

# A Claude Code credentials file is well under 1 KiB; anything beyond this is not one, and is not read.
MAX_FILE_BYTES = 1024 * 1024

# Prefix of an OAuth access token (`claude setup-token`, or the file's accessToken); a Console API key starts with
# `sk-ant-api`. An OAuth token set as ANTHROPIC_API_KEY is sent as what it is: a Bearer token.
OAUTH_TOKEN_PREFIX = "sk-ant-oat"

log = logging.getLogger(__name__)

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


class OversizedCredentials(MalformedCredentials):
    """The file is larger than MAX_FILE_BYTES: it is not a credentials file, and is not read."""


def read_credentials_file(path: Path | str) -> bytes:
    """The bytes of a credentials file, refused unread when it is over MAX_FILE_BYTES. Raises OversizedCredentials,
    FileNotFoundError or another OSError."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise OversizedCredentials(_oversized(path, size))
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # grew between the fstat and the read
        raise OversizedCredentials(_oversized(path, len(data)))
    return data


def _oversized(path: Path | str, size: int) -> str:
    return (
        f"{path} is {size} bytes, more than a credentials file can be ({MAX_FILE_BYTES // 1024} KiB at most): "
        "point CLAUDE_CREDENTIALS_PATH at the file `claude auth login` writes"
    )


def exposure_warning(path: Path | None) -> str | None:
    """A warning when `path` holds a refresh token and its group or others may read it; None otherwise (also when
    it cannot be read). Names the file and its mode, never the content."""
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & 0o044:
            return None
        parsed = parse_credentials(read_credentials_file(path), str(path))
    except (OSError, CredentialsError):
        return None
    if parsed.refresh_token is None:
        return None
    who = " and ".join(name for bit, name in ((0o040, "its group"), (0o004, "every user")) if mode & bit)
    return (
        f"{path} holds a refresh token and is readable by {who} (mode {mode:04o}): anyone who can read it can take "
        f"over the login; run `chmod 600 {path}`"
    )


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

    @property
    def described(self) -> str:
        """What the credential is, in words for logs and `check` (never the secret)."""
        if self.kind is CredentialKind.API_KEY:
            return "a Console API key"
        if self.kind is CredentialKind.OAUTH_FILE:
            return "an OAuth token from the credentials file"
        if self.source == "ANTHROPIC_API_KEY":
            return f"an OAuth access token ({OAUTH_TOKEN_PREFIX}…, sent as a Bearer token)"
        return "an OAuth access token"

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
    and parsed again only when it changed; a `path` of None means there is no file to look at. `grace` is how long
    the last good credential stands in for a file that became unreadable or malformed (0: not at all). Thread-safe
    (the CLI and the app may share it).
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
        grace: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.recheck = recheck
        self.grace = grace
        self._clock = clock
        self._fresh_until = 0.0  # the last look at the file holds until then
        # Credential variables set to an empty value: ignored, and named when nothing resolves.
        self.empty = empty
        # A credential from the environment never changes: one object, handed out on every call.
        self._fixed: Credential | None = None
        if api_key and api_key.startswith(OAUTH_TOKEN_PREFIX):
            self._fixed = Credential(CredentialKind.ACCESS_TOKEN, api_key, "ANTHROPIC_API_KEY")
        elif api_key:
            self._fixed = Credential(CredentialKind.API_KEY, api_key, "ANTHROPIC_API_KEY")
        elif access_token:
            self._fixed = Credential(CredentialKind.ACCESS_TOKEN, access_token, token_variable)
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int, int] | None = None
        self._cached: Credential | None = None
        self._last_good: Credential | None = None  # the last credential the file gave, kept through a bad episode
        self._trouble_since: float | None = None  # when the file stopped reading well (clock time)
        self._trouble: str | None = None  # what is wrong with it then
        self._gave_up = False  # the grace ran out in this episode (said once)

    def resolve(self) -> Credential:
        if self._fixed is not None:
            return self._fixed
        cached = self._cached
        if cached is not None and self.recheck > 0 and self._clock() < self._fresh_until:
            return cached  # looked at the file less than `recheck` seconds ago
        return self._from_file()

    async def resolve_async(self) -> Credential:
        """`resolve` for the event loop: when the file must be looked at, the look (stat, read, parse) runs in a
        worker thread; otherwise the answer comes at once, with no thread involved."""
        if self._fixed is not None:
            return self._fixed
        cached = self._cached
        if cached is not None and self.recheck > 0 and self._clock() < self._fresh_until:
            return cached
        return await asyncio.to_thread(self._from_file)

    def fallback_note(self) -> str | None:
        """While the last good credential stands in for a file that does not read well: what is wrong and for how
        much longer it stands in. None otherwise."""
        since, trouble = self._trouble_since, self._trouble
        if since is None or trouble is None or self._gave_up:
            return None
        left = max(0.0, self.grace - (self._clock() - since))
        return f"using the last good credential for up to {left:.0f}s more: {trouble}"

    def invalidate(self) -> None:
        """Forget the cached parse, so the next resolve() reads the file again (e.g. after a 401)."""
        with self._lock:
            self._cache_key = None
            self._cached = None
            self._fresh_until = 0.0

    def _from_file(self) -> Credential:
        try:
            credential = self._read_file()
        except (UnreadableCredentials, MalformedCredentials) as exc:
            fallback = self._fall_back(exc)
            if fallback is None:
                raise
            return fallback
        if self._trouble_since is not None:
            with self._lock:
                if self._trouble_since is not None:
                    log.info("%s reads well again; the credential in it is used", self.path)
                    self._trouble_since, self._trouble, self._gave_up = None, None, False
        return credential

    def _fall_back(self, exc: CredentialsError) -> Credential | None:
        """The last good credential while the episode that `exc` is part of is younger than `grace`, else None."""
        with self._lock:
            last = self._last_good
            if last is None or self.grace <= 0:
                return None
            now = self._clock()
            problem = str(exc).removesuffix(self._hint())
            if self._trouble_since is None:
                self._trouble_since, self._gave_up = now, False
                log.warning(
                    "%s; serving with the last good credential read from it for up to %.0fs until it reads well again",
                    problem,
                    self.grace,
                )
            self._trouble = problem
            if now - self._trouble_since > self.grace:
                if not self._gave_up:
                    self._gave_up = True
                    log.error("%s for more than %.0fs; the last good credential is no longer used", problem, self.grace)
                return None
            self._cached, self._cache_key = last, None  # looked at again after `recheck`, re-parsed when it reads
            self._fresh_until = now + self.recheck
            return last

    def _read_file(self) -> Credential:
        if self.path is None:
            raise MissingCredentials(f"no credentials{self._hint()}")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise MissingCredentials(f"no credentials: {self.path} does not exist{self._hint()}") from None
        except OSError as exc:
            raise UnreadableCredentials(f"cannot read {self.path} ({exc.strerror}){self._hint()}") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size > MAX_FILE_BYTES:
            raise OversizedCredentials(_oversized(self.path, st.st_size))
        with self._lock:
            if self._cached is not None and self._cache_key == key:
                self._fresh_until = self._clock() + self.recheck
                return self._cached
            try:
                with open(self.path, "rb") as fh:
                    fst = os.fstat(fh.fileno())
                    if fst.st_size > MAX_FILE_BYTES:
                        raise OversizedCredentials(_oversized(self.path, fst.st_size))
                    data = fh.read(MAX_FILE_BYTES + 1)
            except OSError as exc:
                raise UnreadableCredentials(f"cannot read {self.path} ({exc.strerror}){self._hint()}") from None
            if len(data) > MAX_FILE_BYTES:
                raise OversizedCredentials(_oversized(self.path, len(data)))
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
            self._last_good = credential
            self._fresh_until = self._clock() + self.recheck
            return credential

    def _hint(self) -> str:
        empty = (
            f"; {' and '.join(self.empty)} {'is' if len(self.empty) == 1 else 'are'} set but empty"
            if self.empty
            else ""
        )
        return f"{empty}; {CONFIGURE_HINT}"
