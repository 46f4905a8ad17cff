"""What the proxy says as it starts: where it listens and whether keys guard it, where requests go and with which
credential, so a misconfiguration shows in the first lines of the log rather than in the first failed request. Names
variables and files, never a secret."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import CredentialKind, CredentialResolver, CredentialsError, exposure_warning
from claude_proxy.redact import display_url
from claude_proxy.server.inbound import loopback


def listen_line(settings: Settings) -> tuple[int, str]:
    """Where the proxy listens and whether inbound keys guard it: a warning when anyone who reaches the address may
    spend the upstream credential."""
    address = f"{settings.host}:{settings.port}"
    keys = len(settings.inbound_keys)
    if keys:
        return logging.INFO, f"listening on {address}; clients must present one of {keys} PROXY_API_KEYS"
    if loopback(settings.host):
        return logging.INFO, f"listening on {address} (this machine only); no key asked for (PROXY_API_KEYS unset)"
    return (
        logging.WARNING,
        f"listening on {address} WITHOUT KEYS (PROXY_API_KEYS unset): whoever reaches this address uses the upstream "
        "credential; set PROXY_API_KEYS, or guard the address otherwise (e.g. a NetworkPolicy)",
    )


def startup_lines(settings: Settings, resolver: CredentialResolver, now: float | None = None) -> list[tuple[int, str]]:
    """(log level, message) for each line to log at start: where it listens and whether keys guard it; the upstream
    and the credential in use, or a warning that none resolves; a warning for each credential variable set to an
    empty value, for a file token that has expired (with what to run) and for a credentials file holding a refresh
    token that others may read."""
    lines: list[tuple[int, str]] = [listen_line(settings)]
    for name in settings.empty_credentials:
        lines.append((logging.WARNING, f"{name} is set but empty: ignored"))
    upstream = display_url(settings.base_url)
    try:
        credential = resolver.resolve()
    except CredentialsError as exc:
        lines.append(
            (
                logging.WARNING,
                f"NO UPSTREAM CREDENTIAL: every request to {upstream} will be answered 503 until one is configured "
                f"({exc})",
            )
        )
        return lines
    where = credential.source if credential.kind is CredentialKind.OAUTH_FILE else f"from {credential.source}"
    line = f"upstream {upstream}, credential: {credential.described} {where}"
    level = logging.INFO
    if credential.expires_at is not None:
        expiry = datetime.fromtimestamp(credential.expires_at, UTC).isoformat(timespec="seconds")
        expired = credential.expired(time.time() if now is None else now)
        line += f" ({'expired' if expired else 'expires'} {expiry.replace('+00:00', 'Z')})"
        if expired and credential.kind is CredentialKind.OAUTH_FILE:
            level = logging.WARNING
            line += (
                f": requests will be refused until it is renewed; run `claude-proxy refresh --credentials "
                f"{credential.source}` (or `claude` once, if Claude Code uses this login), or `claude auth login` "
                "when that fails"
            )
    lines.append((level, line))
    if credential.kind is CredentialKind.OAUTH_FILE:
        exposed = exposure_warning(resolver.path)
        if exposed:
            lines.append((logging.WARNING, exposed))
    return lines
