"""What the `claude-proxy refresh` tests share: refresh options against the fake endpoint, a login that is due, a
recorder of the waits between retries, and a check that no temporary file was left."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from claude_proxy.credentials.lifecycle import RefreshOptions
from claude_proxy.credentials.oauth import REFRESH_RETRY
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.lifecycle_support import now_ms, write_credentials


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def options(fake: FakeOAuthServer, **kw: object) -> RefreshOptions:
    defaults: dict[str, object] = {
        "token_url": fake.url,
        "timeout": 5.0,
        "retry": replace(REFRESH_RETRY, max_retries=2),
    }
    defaults.update(kw)
    return RefreshOptions(**defaults)  # type: ignore[arg-type]


def due_login(fake: FakeOAuthServer, creds: Path, minutes_left: int = 10) -> tuple[bytes, str]:
    login = fake.login()
    data = write_credentials(creds, login.access_token, login.refresh_token, now_ms() + minutes_left * 60_000)
    return data, login.refresh_token


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
