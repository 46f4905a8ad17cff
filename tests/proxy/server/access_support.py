"""What the access log and metrics tests share: the model and usage they script, the access log records a test
captured, and a wait for what the server records once the response is over."""

from __future__ import annotations

import time
from typing import Any

import pytest

from claude_proxy.server.logs import ACCESS_LOGGER

MODEL = "claude-sonnet-4-6"
USAGE = {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 40}


def eventually(check: Any, timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
