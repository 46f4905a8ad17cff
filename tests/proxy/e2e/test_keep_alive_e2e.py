"""A subscription login kept alive with no cluster: `claude-proxy refresh --every` and `claude-proxy serve` as two real
processes on one credentials file, the token endpoint and Anthropic the fakes. Access tokens here live 10 seconds
(8 hours in life); the refresher renews each one before it expires, the proxy picks every new one up from the file,
and requests keep succeeding across several expiries."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.oauth import FakeOAuthServer, Login
from tests.proxy.lifecycle_support import assert_no_secrets, cli_env, now_ms, start_cli, write_credentials
from tests.proxy.serve_support import serve_process

pytestmark = pytest.mark.slow

LIFETIME = 10  # seconds an access token lives
BEFORE = 7  # seconds before expiry the refresher renews it


class ExpiringOAuth(FakeOAuthServer):
    """The fake token endpoint, noting when each access token was issued, so the fake Anthropic can refuse it once
    it has expired, as Anthropic does."""

    def __init__(self) -> None:
        super().__init__(expires_in=LIFETIME)
        self.issued_at: dict[str, float] = {}

    def _issue(self) -> Login:
        login = super()._issue()
        self.issued_at[login.access_token] = time.time()
        return login


class Unexpired:
    """The fake Anthropic's set of accepted OAuth tokens: those issued less than LIFETIME seconds ago."""

    def __init__(self, oauth: ExpiringOAuth) -> None:
        self.oauth = oauth
        self.refused: list[str] = []

    def __contains__(self, token: object) -> bool:
        issued = self.oauth.issued_at.get(str(token))
        ok = issued is not None and time.time() < issued + LIFETIME
        if not ok:
            self.refused.append(str(token))
        return ok


@pytest.fixture
def oauth() -> Iterator[ExpiringOAuth]:
    with ExpiringOAuth() as server:
        yield server


def test_the_refresher_keeps_the_proxy_serving_across_expiries(
    fake: FakeAnthropic, oauth: ExpiringOAuth, tmp_path: Path
) -> None:
    creds = tmp_path / "home" / ".claude" / ".credentials.json"
    first = oauth.login()
    write_credentials(creds, first.access_token, first.refresh_token, now_ms() + LIFETIME * 1000)
    accepted = Unexpired(oauth)
    fake.oauth_tokens = accepted  # type: ignore[assignment]

    served_tokens: list[str] = []
    failures: list[str] = []

    def ask(client: openai.OpenAI) -> None:
        try:
            out = client.chat.completions.create(
                model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
            )
            assert out.choices[0].message.content
            served_tokens.append(fake.messages_requests[-1].headers["authorization"].removeprefix("Bearer "))
        except openai.APIError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    # Refresh when BEFORE of the LIFETIME seconds are left: each token is replaced a few seconds after it was issued,
    # well before it expires. The refresher runs first (however slowly the processes start, the login is renewed
    # from its first look on), then the proxy.
    refresher = start_cli(
        "refresh",
        "--every",
        "1s",
        "--before",
        str(BEFORE / 60),
        "--credentials",
        str(creds),
        env=cli_env(tmp_path, oauth),
    )
    assert refresher.stdout is not None
    lines: list[dict[str, str]] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(line) for line in refresher.stdout or ()))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not lines and refresher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines, "the refresher printed no outcome line"
        env = {"ANTHROPIC_BASE_URL": fake.url, "CLAUDE_CREDENTIALS_PATH": str(creds)}
        with serve_process(env, tmp_path) as srv:
            client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=20)
            deadline = time.monotonic() + 3 * LIFETIME  # three lifetimes: several tokens expire meanwhile
            while time.monotonic() < deadline:
                ask(client)
                time.sleep(0.25)
            ask(client)
            proxy_log = srv.log.read_text()
    finally:
        refresher.send_signal(signal.SIGTERM)
        try:
            refresher.wait(timeout=30)
        finally:
            if refresher.poll() is None:
                refresher.kill()
        reader.join(10)
    stderr = refresher.stderr.read() if refresher.stderr else ""

    assert refresher.returncode == 0, stderr
    assert failures == [], failures
    refreshed = [line for line in lines if line["result"] == "refreshed"]
    assert len(refreshed) >= 4, lines  # one every few seconds over three lifetimes
    assert all(line["result"] in ("refreshed", "skipped") for line in lines), lines
    # Requests went out with one token after another, each refused upstream by now but the last ones.
    distinct = list(dict.fromkeys(served_tokens))
    assert len(distinct) >= 4, distinct
    assert distinct[0] not in accepted and first.access_token not in accepted  # expired: the proxy really moved on
    # The last request used the file's token, or the one before it when the refresher replaced it after that request
    # (the proxy looks at the file at most once a second).
    newest = sorted(oauth.issued_at, key=oauth.issued_at.__getitem__)[-2:]
    assert json.loads(creds.read_text())["claudeAiOauth"]["accessToken"] == newest[-1]
    assert served_tokens[-1] in newest, (served_tokens[-1], newest)
    stdout = "\n".join(json.dumps(line) for line in lines)
    assert_no_secrets([stdout, stderr, proxy_log], oauth.issued())
    assert "Traceback" not in stderr + proxy_log
