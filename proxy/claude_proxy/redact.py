"""Secrets out of text that comes from elsewhere (an upstream's error message) before it is logged or shown."""

from __future__ import annotations

import re

# An Anthropic key or token, a long run of token characters, or a longer base64/JWT-like run (dots, slashes, `=`):
# no word, path or URL a person needs to read is that long without a separator.
_TOKENISH = re.compile(r"sk-ant-[A-Za-z0-9_-]+|[A-Za-z0-9_-]{32,}|[A-Za-z0-9_.+/=-]{40,}")
REDACTED = "[redacted]"


def mask_secrets(text: str) -> str:
    """`text` with everything shaped like a key or a token replaced by `[redacted]`."""
    return _TOKENISH.sub(REDACTED, text)
