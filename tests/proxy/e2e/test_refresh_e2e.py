"""End to end: a running proxy picks up what `claude-proxy refresh` (a separate process) writes, with no restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from claude_proxy.credentials.resolver import RECHECK_SECONDS
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.lifecycle_support import (
    assert_no_secrets,
    cli_env,
    now_ms,
    outcome_line,
    read_oauth,
    run_cli,
    write_credentials,
)

pytestmark = pytest.mark.slow


class IssuedBy:
    """The access tokens the fake Anthropic accepts: every one the OAuth fake issued, minus revoked ones."""

    def __init__(self, oauth: FakeOAuthServer) -> None:
        self.oauth = oauth
        self.revoked: set[str] = set()

    def __contains__(self, token: object) -> bool:
        return token in set(self.oauth.issued()) and token not in self.revoked


@pytest.fixture
def oauth() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as server:
        yield server


def ask(url: str) -> str | None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)
    out = client.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    return out.choices[0].message.content


def bearer(fake: FakeAnthropic, index: int = -1) -> str:
    return fake.messages_requests[index].headers["authorization"].removeprefix("Bearer ")


def test_next_request_uses_the_refreshed_token(
    fake: FakeAnthropic, proxy: ProxyFactory, oauth: FakeOAuthServer, tmp_path: Path
) -> None:
    creds = tmp_path / "volume" / ".credentials.json"
    login = oauth.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 20 * 60_000)
    accepted = IssuedBy(oauth)
    fake.oauth_tokens = accepted  # type: ignore[assignment]
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))

    assert ask(url)
    assert bearer(fake) == login.access_token

    result = run_cli("refresh", "--credentials", str(creds), env=cli_env(tmp_path, oauth))
    assert result.returncode == 0 and outcome_line(result.stdout)["result"] == "refreshed"
    accepted.revoked.add(login.access_token)  # from now on only the new token works upstream

    assert ask(url)
    assert bearer(fake) == read_oauth(creds)["accessToken"] != login.access_token
    assert_no_secrets([result.stdout, result.stderr], oauth.issued())


def test_requests_in_flight_during_refreshes_never_fail(
    fake: FakeAnthropic, proxy: ProxyFactory, oauth: FakeOAuthServer, tmp_path: Path
) -> None:
    creds = tmp_path / "volume" / ".credentials.json"
    login = oauth.login()
    write_credentials(creds, login.access_token, login.refresh_token, now_ms())
    fake.oauth_tokens = IssuedBy(oauth)  # type: ignore[assignment]
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))
    env = cli_env(tmp_path, oauth)

    failures: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                assert ask(url)
                answered[0] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for _ in range(5):
            result = run_cli("refresh", "--credentials", str(creds), "--force", env=env)
            assert result.returncode == 0, result.stdout
    finally:
        stop.set()
        for w in workers:
            w.join(20)
    assert failures == []
    assert oauth.grants == 5 and answered[0] >= 5
    used = {r.headers["authorization"].removeprefix("Bearer ") for r in fake.messages_requests}
    assert used <= set(oauth.issued())
    assert len(used) >= 3, "the proxy moved to new tokens while serving"
    # The proxy looks at the file at most once per RECHECK_SECONDS: after that, the latest token is the one used.
    time.sleep(RECHECK_SECONDS)
    assert ask(url) and bearer(fake) == read_oauth(creds)["accessToken"]
