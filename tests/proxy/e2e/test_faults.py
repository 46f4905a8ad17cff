"""Upstream faults, each with its defined outcome, through the real app with the official openai SDK.

No fault may leave a hung client, an orphaned upstream request (the fake counts the requests it is still handling),
or a 500 without an explanation.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest

from claude_proxy.credentials.lifecycle import RefreshOptions, Result, refresh
from claude_proxy.credentials.oauth import REFRESH_RETRY
from tests.conftest import ProxyFactory, metric_samples
from tests.fakes.anthropic import (
    RESET,
    BrokenReply,
    ErrorReply,
    FakeAnthropic,
    message,
    render_sse,
    text,
)
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.lifecycle_support import now_ms, write_credentials

ASK: list[Any] = [{"role": "user", "content": "Hello"}]
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def waits() -> list[float]:
    """The seconds the proxy chose to wait before each retry (recorded, not waited)."""
    return []


@pytest.fixture
def proxy(proxy: ProxyFactory, waits: list[float]) -> ProxyFactory:
    """The real app, whose backoff between retries is recorded instead of slept: every outcome and count is the
    same, without the seconds of waiting."""

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    return functools.partial(proxy, _sleep=no_wait)


def client(url: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=retries, timeout=20)


def collect(stream: Any) -> str:
    return "".join((chunk.choices[0].delta.content or "") for chunk in stream if chunk.choices)


def partial_stream(*tail: Any, value: str = "partial answer") -> dict[str, Any]:
    """The start of a text answer (message_start .. text deltas), then `tail`."""
    events = list(render_sse(message(text(value))))
    return {**message(text(value)), "_events": [*events[:-3], *tail]}


def first_event_then(*tail: Any) -> dict[str, Any]:
    """Only message_start, then `tail`: a failure before any output."""
    return {**message(text("x")), "_events": [next(iter(render_sse(message(text("x"))))), *tail]}


def metric(url: str, name: str, expect: float | None = None) -> float:
    """The sum of the samples whose line starts with `name`; with `expect`, waits briefly for that value (the end of
    a stream is recorded just after its last byte went out)."""
    deadline = time.monotonic() + 2
    while True:
        value = _metric(url, name)
        if expect is None or value == expect or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def _metric(url: str, name: str) -> float:
    return sum(value for key, value in metric_samples(url).items() if key.startswith(name))


def settled(fake: FakeAnthropic) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if fake.active == 0 and fake.open_streams == 0:
            return True
        time.sleep(0.02)
    return False


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- connection refused --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_connection_refused_is_a_502_after_bounded_retries(
    proxy: ProxyFactory, stream: bool, waits: list[float]
) -> None:
    url = proxy(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{closed_port()}", PROXY_MAX_RETRIES="1")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        result = client(url).chat.completions.create(model=MODEL, messages=ASK, stream=stream)
        if stream:
            collect(result)
    assert info.value.status_code == 502
    assert "unreachable" in info.value.message and "ConnectError" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - started < 5
    assert metric(url, 'proxy_upstream_requests_total{status="error"}') == 2
    assert metric(url, 'proxy_upstream_retries_total{reason="connection"}') == 1
    assert len(waits) == 1 and 0.25 <= waits[0] <= 0.5  # the first backoff step, jittered


# ---- a header that would split the request -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_header_value_with_cr_or_lf_is_refused_before_sending(
    fake: FakeAnthropic, proxy: ProxyFactory, stream: bool
) -> None:
    url = proxy(ANTHROPIC_API_KEY="sk-ant-api03-test-key\r\nx-injected: 1")
    with pytest.raises(openai.APIStatusError) as info:
        result = client(url).chat.completions.create(model=MODEL, messages=ASK, stream=stream)
        if stream:
            collect(result)
    assert info.value.status_code == 502 and "LocalProtocolError" in info.value.message
    assert fake.requests == []  # nothing reached the upstream, and it was not retried
    assert metric(url, "proxy_upstream_retries_total") == 0


# ---- reset mid-body ------------------------------------------------------------------------------------------------


def test_reset_mid_body_is_retried_then_502(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    whole = json.dumps(message(text("complete"))).encode()
    fake.script(BrokenReply(whole, send=20), message(text("second try")))
    c = client(proxy(PROXY_MAX_RETRIES="2"))
    assert c.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content == "second try"
    assert len(fake.messages_requests) == 2
    fake.script(*(BrokenReply(whole, send=20) for _ in range(3)))
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=MODEL, messages=ASK)
    assert info.value.status_code == 502 and "unreachable" in info.value.message
    assert len(fake.messages_requests) == 5
    assert settled(fake)


# ---- reset mid-stream ----------------------------------------------------------------------------------------------


def test_reset_mid_stream_ends_with_an_error_line_and_is_not_retried(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(partial_stream(RESET))
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in client(proxy()).chat.completions.create(model=MODEL, messages=ASK, stream=True):
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert received == "partial answer"
    assert "connection to Anthropic lost mid-stream" in str(info.value)
    assert len(fake.messages_requests) == 1  # output had begun: never repeated
    assert settled(fake)


def test_reset_before_output_is_retried_invisibly(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(first_event_then(RESET), message(text("clean answer")))
    out = collect(client(proxy()).chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert out == "clean answer"
    assert len(fake.messages_requests) == 2


# ---- stalled stream ------------------------------------------------------------------------------------------------


def test_stall_before_output_is_a_504_after_bounded_retries(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(first_event_then(10.0), first_event_then(10.0))
    url = proxy(PROXY_STREAM_IDLE_TIMEOUT="0.4", PROXY_MAX_RETRIES="1")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client(url).chat.completions.create(model=MODEL, messages=ASK, stream=True)
    assert info.value.status_code == 504 and "stalled" in info.value.message
    assert time.monotonic() - started < 4
    assert len(fake.messages_requests) == 2
    assert settled(fake)  # both stalled upstream streams were closed, not left hanging


def test_stall_after_output_is_cut_with_an_error_line(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(partial_stream(10.0))
    url = proxy(PROXY_STREAM_IDLE_TIMEOUT="0.4")
    with pytest.raises(openai.APIError) as info:
        collect(client(url).chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert "stalled" in str(info.value)
    assert settled(fake)
    assert metric(url, 'proxy_stream_errors_total{type="timeout_error"}', expect=1) == 1


# ---- malformed JSON ------------------------------------------------------------------------------------------------


def test_malformed_json_answer_is_a_502(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        ErrorReply(200, "", "", raw=b'{"id": "msg_1", "content": [', headers={"content-type": "application/json"})
    )
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy()).chat.completions.create(model=MODEL, messages=ASK)
    assert info.value.status_code == 502 and "not JSON" in info.value.message


def test_malformed_stream_event_ends_with_an_error_line(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(partial_stream(b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'))
    with pytest.raises(openai.APIError) as info:
        collect(client(proxy()).chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert "malformed stream event" in str(info.value)


# ---- stream without message_stop -----------------------------------------------------------------------------------


def test_stream_ending_without_message_stop(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy(PROXY_MAX_RETRIES="1"))
    # after output: an error line, never [DONE]
    fake.script(partial_stream())
    with pytest.raises(openai.APIError) as info:
        collect(c.chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert "ended before the message was complete" in str(info.value)
    # before output: retried, and the client sees only the complete answer
    fake.script(first_event_then(), message(text("whole")))
    assert collect(c.chat.completions.create(model=MODEL, messages=ASK, stream=True)) == "whole"


# ---- HTML pages from a gateway -------------------------------------------------------------------------------------


def test_html_error_pages_from_a_gateway_are_explained(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    html = ErrorReply(502, "", "", raw=page, headers={"content-type": "text/html"})
    c = client(proxy(PROXY_MAX_RETRIES="1"))
    fake.script(html, html)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    assert info.value.status_code == 502
    assert "text/html page instead of an error object" in info.value.message
    assert "nginx" not in info.value.message  # the page itself is not relayed
    assert len(fake.messages_requests) == 2  # a 502 is retried, within the budget
    # a 200 that is an HTML page (a captive portal) where an event stream was expected
    portal = ErrorReply(200, "", "", raw=b"<html>sign in</html>", headers={"content-type": "text/html"})
    fake.script(portal, portal)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=MODEL, messages=ASK, stream=True)
    assert info.value.status_code == 502 and "instead of an event stream" in info.value.message
    fake.script(portal)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model=MODEL, messages=ASK)
    assert info.value.status_code == 502 and "not JSON" in info.value.message


# ---- unknown content block and event types -------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def test_unknown_block_and_event_types_are_skipped(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy())
    odd = {"type": "mystery_block", "payload": {"x": 1}}
    fake.script(message(odd, text("visible"), {"type": "server_tool_use_v9", "id": "s1"}))
    assert c.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content == "visible"
    events = list(render_sse(message(text("visible"))))
    unknown = [
        _sse("future_event", {"type": "future_event", "data": [1, 2]}),
        _sse("content_block_start", {"type": "content_block_start", "index": 5, "content_block": odd}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 5, "delta": {"type": "mystery_delta"}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 5}),
    ]
    fake.script({**message(text("visible")), "_events": [events[0], *unknown, *events[1:]]})
    chunks = list(c.chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices) == "visible"
    assert chunks[-1].choices[0].finish_reason == "stop"


# ---- 5xx storms ----------------------------------------------------------------------------------------------------


def test_5xx_storm_attempts_are_bounded_even_with_retrying_clients(
    fake: FakeAnthropic, proxy: ProxyFactory, waits: list[float]
) -> None:
    n, retries = 12, 2
    fake.default = lambda record: ErrorReply(503, "api_error", "storm", headers={"retry-after-ms": "5"})
    url = proxy(PROXY_MAX_RETRIES=str(retries), PROXY_MAX_CONCURRENCY="4", PROXY_MAX_QUEUE="16")

    async def one(i: int) -> int:
        # the SDK's own retries are on (2, its default): the proxy's x-should-retry: false keeps them from multiplying
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=2, timeout=20) as ac:
            try:
                if i % 2:
                    stream = await ac.chat.completions.create(model=MODEL, messages=ASK, stream=True)
                    async for _ in stream:
                        pass
                else:
                    await ac.chat.completions.create(model=MODEL, messages=ASK)
            except openai.APIStatusError as exc:
                assert "storm" in exc.message
                return exc.status_code
            return 200

    async def run() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(n)))

    statuses = asyncio.run(run())
    assert statuses == [503] * n
    attempts = len(fake.messages_requests)
    assert attempts == n * (1 + retries)  # every request retried fully, none more than its budget
    assert metric(url, "proxy_upstream_retries_total") == n * retries
    assert waits == [0.005] * (n * retries)  # each retry waited what retry-after-ms asked
    assert metric(url, 'proxy_upstream_requests_total{status="503"}') == attempts
    assert settled(fake)


def test_early_stream_failures_and_http_errors_share_one_retry_budget(
    fake: FakeAnthropic, proxy: ProxyFactory, waits: list[float]
) -> None:
    busy = ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "5"})
    overloaded = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Over"}}\n\n'
    fake.script(first_event_then(overloaded), busy, busy, busy, busy)
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy(PROXY_MAX_RETRIES="2")).chat.completions.create(model=MODEL, messages=ASK, stream=True)
    assert info.value.status_code == 503  # Anthropic's 529, as OpenAI clients see it
    assert len(fake.messages_requests) == 3  # 1 + PROXY_MAX_RETRIES, however the failures mix
    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and waits[1] == 0.005  # backoff, then the server's hint


# ---- slow token endpoint -------------------------------------------------------------------------------------------


def test_slow_token_endpoint_never_slows_the_proxy(fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path) -> None:
    """The proxy never calls the token endpoint: a refresh stuck on it changes nothing for requests, and the refresh
    itself gives up with a clear outcome after its own timeout."""
    with FakeOAuthServer() as oauth:
        login = oauth.login()
        creds = tmp_path / "volume" / ".credentials.json"
        write_credentials(creds, login.access_token, login.refresh_token, now_ms() + 10 * 60_000)
        fake.oauth_tokens = {login.access_token}
        oauth.delay = 3.0
        url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))
        outcome: list[Any] = []
        options = RefreshOptions(token_url=oauth.url, timeout=1.0, retry=replace(REFRESH_RETRY, max_retries=0))
        worker = threading.Thread(target=lambda: outcome.append(refresh(creds, options)))
        worker.start()
        try:
            time.sleep(0.2)  # the refresh is now waiting on the slow endpoint, holding the file's lock
            c = client(url)
            for _ in range(3):
                started = time.monotonic()
                assert c.chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content
                assert time.monotonic() - started < 0.8
        finally:
            worker.join(20)
    assert outcome and (outcome[0].result, outcome[0].reason) == (Result.FAILED, "network")
    assert json.loads(creds.read_text())["claudeAiOauth"]["accessToken"] == login.access_token
