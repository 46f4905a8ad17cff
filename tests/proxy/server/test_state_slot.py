"""The upstream slot: the concurrency slot is taken once and given back once, however the request ends, and the
usage it saw is recorded once. Real app under uvicorn, the fake Anthropic, the openai SDK where a client fits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from claude_proxy.config import Settings
from claude_proxy.server.access import RequestInfo
from claude_proxy.server.app import create_app
from claude_proxy.server.limits import Limiter
from claude_proxy.server.state import UpstreamSlot
from tests.conftest import API_KEY, ProxyFactory, metric_samples, serve
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, render_sse, text

MODEL = "claude-sonnet-4-6"
ASK = [{"role": "user", "content": "Hello"}]
# One slot and no queue: a slot that was not given back refuses the next request with a 429 at once.
ONE_SLOT = {"PROXY_MAX_CONCURRENCY": "1", "PROXY_MAX_QUEUE": "0", "PROXY_MAX_RETRIES": "0"}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def paused_stream(words: str, pause: float) -> dict[str, Any]:
    """A text answer whose stream stops for `pause` seconds after its first delta."""
    events = list(render_sse(message(text(words))))
    return {**message(text(words)), "_events": [*events[:4], pause, *events[4:]]}


def slots_free(url: str) -> bool:
    samples = metric_samples(url)
    return samples["proxy_upstream_inflight"] == 0 and samples["proxy_upstream_queued"] == 0


def admitted_again(fake: FakeAnthropic, url: str) -> None:
    """The slot came back exactly once: free (not -1, which a second release would leave), and taken again."""
    assert wait_for(lambda: slots_free(url))
    fake.script(message(text("again")))
    assert client(url).chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content == "again"
    assert slots_free(url)


def tokens(url: str) -> dict[str, float]:
    return {k: v for k, v in metric_samples(url).items() if k.startswith("proxy_tokens_total")}


def test_an_answer_gives_the_slot_back_and_counts_its_usage_once(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(**ONE_SLOT)
    fake.script(message(text("whole"), usage={"input_tokens": 7, "output_tokens": 3}))
    assert client(url).chat.completions.create(model=MODEL, messages=ASK).choices[0].message.content == "whole"
    assert tokens(url)[f'proxy_tokens_total{{kind="input",model="{MODEL}"}}'] == 7
    fake.script(message(text("streamed"), usage={"input_tokens": 5, "output_tokens": 2}))
    chunks = list(client(url).chat.completions.create(model=MODEL, messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed"
    assert wait_for(lambda: tokens(url)[f'proxy_tokens_total{{kind="input",model="{MODEL}"}}'] == 12)
    admitted_again(fake, url)
    assert (
        tokens(url)[f'proxy_tokens_total{{kind="output",model="{MODEL}"}}'] == 3 + 2 + 7
    )  # the last one's default usage


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_error_gives_the_slot_back(fake: FakeAnthropic, proxy: ProxyFactory, stream: bool) -> None:
    url = proxy(**ONE_SLOT)
    fake.script(ErrorReply(400, "invalid_request_error", "no such thing"))
    with pytest.raises(openai.BadRequestError):
        created = client(url).chat.completions.create(model=MODEL, messages=ASK, stream=stream)
        if stream:
            list(created)  # type: ignore[arg-type]
    admitted_again(fake, url)


def test_a_client_leaving_mid_stream_gives_the_slot_back(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(**ONE_SLOT)
    fake.script(paused_stream("a long answer", 30.0))
    stream = client(url).chat.completions.create(model=MODEL, messages=ASK, stream=True)
    next(iter(stream))
    assert metric_samples(url)["proxy_upstream_inflight"] == 1  # held while the stream is open
    stream.close()
    assert wait_for(lambda: fake.open_streams == 0)
    admitted_again(fake, url)


def test_the_shutdown_deadline_gives_the_slot_back(fake: FakeAnthropic, tmp_path: Path) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)}
    app = create_app(Settings.from_env({**env, **ONE_SLOT, "PROXY_SHUTDOWN_GRACE": "0.3"}))
    fake.script(paused_stream("outlives the grace", 30.0))
    with serve(app) as url:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "stream": True}
        ) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            app.state.drain.begin()
            rest = list(lines)
        assert any('"shutting_down"' in line for line in rest) and "data: [DONE]" not in rest
        assert wait_for(lambda: slots_free(url))
        assert metric_samples(url)['proxy_stream_errors_total{type="shutting_down"}'] == 1


async def test_an_upstream_slot_is_freed_once_and_records_usage_once_whatever_ends_it() -> None:
    """The same, in one process: an UpstreamSlot around work that answers, raises, or is cancelled."""
    limiter = Limiter(1, 0, 1.0)

    class Recorder:
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def usage(self, model: str | None, usage: dict[str, Any]) -> None:
            self.seen.append(usage)

    metrics = Recorder()
    state: Any = type("AppStateStub", (), {"limiter": limiter, "drain": None, "metrics": metrics})()

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def work(slot: UpstreamSlot, ending: str) -> None:
        slot.usage = {"input_tokens": 2, "output_tokens": 1}
        if ending == "raise":
            raise RuntimeError("upstream failed")
        if ending == "cancel":
            await asyncio.sleep(3600)

    for ending in ("answer", "raise", "cancel"):
        info = RequestInfo("req_x")
        slot = UpstreamSlot(state, receive, info)

        async def run(slot: UpstreamSlot = slot, ending: str = ending) -> None:
            async with slot:
                assert limiter.active == 1
                await work(slot, ending)

        task = asyncio.ensure_future(run())
        await asyncio.sleep(0.01)
        if ending == "cancel":  # the client gone, or the shutdown deadline: the request's task is cancelled
            task.cancel()
        expected = {"answer": contextlib.nullcontext(), "raise": pytest.raises(RuntimeError)}
        with expected.get(ending, pytest.raises(asyncio.CancelledError)):
            await task
        assert limiter.active == 0, ending
        assert (info.input_tokens, info.output_tokens) == (2, 1), ending
    assert len(metrics.seen) == 3
