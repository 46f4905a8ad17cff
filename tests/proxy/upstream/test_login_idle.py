"""The login's truth without traffic: when Anthropic has said nothing for a while, one GET /v1/models (which generates
nothing and spends no tokens) checks the credential, so a revoked login shows in /readyz with no client paying for it;
a proxy whose requests keep being answered never sends the check."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import httpx

from claude_proxy.upstream.login import LoginState, check_when_idle
from tests.conftest import OAUTH_TOKEN, ProxyFactory, metric_samples
from tests.fakes.anthropic import FakeAnthropic


def _login(url: str) -> dict[str, object]:
    response = httpx.get(f"{url}/readyz")
    assert response.status_code == 200
    login: dict[str, object] = response.json()["login"]
    return login


def test_a_revoked_token_shows_without_any_client_request(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_ACCESS_TOKEN=OAUTH_TOKEN, PROXY_LOGIN_CHECK_SECONDS="0.3")
    deadline = time.monotonic() + 10
    while _login(url)["state"] == "unknown" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _login(url)["state"] == "valid"  # checked while idle: nobody asked

    fake.oauth_tokens.clear()  # revoked upstream
    while _login(url)["state"] == "valid" and time.monotonic() < deadline:
        time.sleep(0.05)
    login = _login(url)
    assert login["state"] == "refused" and login["status"] == 401 and login["credential"] == "access_token"
    assert metric_samples(url)["proxy_upstream_login_valid"] == 0
    sent = {(r.method, r.path.split("?")[0]) for r in fake.requests}
    assert sent == {("GET", "/v1/models")}  # nothing that generates, nothing that spends tokens


async def test_the_check_waits_while_real_answers_keep_coming() -> None:
    now = [1000.0]
    state = LoginState(clock=lambda: now[0])
    checks: list[float] = []
    waits: list[float] = []

    async def check() -> None:
        checks.append(now[0])
        state.accepted("oauth_file")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds
        if now[0] < 1200:
            state.accepted("oauth_file")  # a client's request was answered meanwhile
        if len(waits) > 20:
            raise asyncio.CancelledError

    with contextlib.suppress(asyncio.CancelledError):
        await check_when_idle(state, check, 60.0, sleep=sleep)
    # Busy until 1200 (the last real answer came at 1180): no check; then one per 60 s of silence.
    assert checks and checks[0] == 1180 + 60
    assert all(b - a >= 60 - 1e-6 for a, b in itertools.pairwise(checks))


async def test_a_failing_check_does_not_spin() -> None:
    now = [0.0]
    state = LoginState(clock=lambda: now[0])
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        raise OSError("unreachable")

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] > 600:
            raise asyncio.CancelledError

    with contextlib.suppress(asyncio.CancelledError):
        await check_when_idle(state, check, 60.0, sleep=sleep)
    assert calls == 10  # one per interval, however quickly each fails
