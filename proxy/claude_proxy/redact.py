"""Secrets out of text that comes from elsewhere (an upstream's error message) before it is logged or shown."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# An Anthropic key or token, a long run of token characters, or a longer base64/JWT-like run (dots, slashes, `=`):
# no word, path or URL a person needs to read is that long without a separator.
_TOKENISH = re.compile(r"sk-ant-[A-Za-z0-9_-]+|[A-Za-z0-9_-]{32,}|[A-Za-z0-9_.+/=-]{40,}")
REDACTED = "[redacted]"


def mask_secrets(text: str) -> str:
    """`text` with everything shaped like a key or a token replaced by `[redacted]`."""
    return _TOKENISH.sub(REDACTED, text)


def display_url(url: str) -> str:
    """`url` without any user name or password in it: the form that may be logged or shown."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
