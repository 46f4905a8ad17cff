"""What the proxy says as it starts: where it listens and whether keys guard it, where requests go and with which
credential, so a misconfiguration shows in the first lines of the log rather than in the first failed request. Names
variables and files, never a secret."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from claude_proxy.config import Settings
from claude_proxy.credentials.resolver import CredentialKind, CredentialResolver, CredentialsError
from claude_proxy.redact import display_url
from claude_proxy.server.inbound import loopback

_KINDS = {
    CredentialKind.API_KEY: "a Console API key",
    CredentialKind.ACCESS_TOKEN: "an OAuth access token",
    CredentialKind.OAUTH_FILE: "an OAuth token from the credentials file",
}


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
    empty value."""
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
    line = f"upstream {upstream}, credential: {_KINDS[credential.kind]} {where}"
    if credential.expires_at is not None:
        expiry = datetime.fromtimestamp(credential.expires_at, UTC).isoformat(timespec="seconds")
        expired = credential.expired(time.time() if now is None else now)
        line += f" ({'expired' if expired else 'expires'} {expiry.replace('+00:00', 'Z')})"
    lines.append((logging.INFO, line))
    return lines
