"""Fixtures of the credentials tests: a rotating token endpoint on 127.0.0.1 (the fake OAuth server, in place of the
fake Anthropic API of tests/conftest.py, which no credentials test uses) and the credentials file on a volume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.oauth import FakeOAuthServer


@pytest.fixture
def fake() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    directory = tmp_path / "volume"
    directory.mkdir()
    return directory / ".credentials.json"
