"""Soak: many mixed requests (plain, streamed, with injected upstream faults) through a real `claude-proxy serve`
process. Every answer must be the one its scenario defines — no error beyond the injected ones — and afterwards the
proxy must hold no leaked tasks or connections and its memory must be flat.

The fault a request meets is chosen by a marker in its prompt, so the expected outcome of each request is known.
Size: SOAK_REQUESTS (default 6000; the fake, the clients and the proxy share 2 cores, and 6000 fit in about 25 s
there).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import API_KEY, metric_samples
from tests.fakes.anthropic import RESET, ErrorReply, FakeAnthropic, Recorded, message, render_sse, text
from tests.proxy.serve_support import serve_process

pytestmark = pytest.mark.slow

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "6000"))
CONCURRENCY = 24
WARMUP = max(200, REQUESTS // 10)
USAGE = {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}

# scenario -> (share of requests, streamed?)
SCENARIOS = {
    "plain": (0.40, False),
    "stream": (0.40, True),
    "overloaded": (0.05, False),  # 529 on every attempt: the client gets 503 after the retry
    "reset_stream": (0.05, True),  # reset after output began: an error line
    "malformed": (0.04, False),  # a 200 whose body is not JSON: 502
    "html": (0.03, True),  # a gateway's HTML 502 page: 502 before the stream begins
    "client_quits": (0.03, True),  # the client leaves after the first chunk
}


def reply_for(record: Recorded) -> Any:
    content = record.body["messages"][-1]["content"]
    prompt = content if isinstance(content, str) else content[0]["text"]
    kind = prompt.split(":", 1)[0]
    answer = message(text(f"answer to {prompt}"), usage=USAGE)
    if kind == "overloaded":
        return ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"})
    if kind == "reset_stream":
        events = list(render_sse(answer))
        return {**answer, "_events": [*events[:-3], RESET]}
    if kind == "malformed":
        return ErrorReply(200, "", "", raw=b'{"id": "msg_', headers={"content-type": "application/json"})
    if kind == "html":
        return ErrorReply(
            502, "", "", raw=b"<html><body>Bad Gateway</body></html>", headers={"content-type": "text/html"}
        )
    if kind == "client_quits":
        events = list(render_sse(answer))
        return {**answer, "_events": [*events[:-3], 0.3, *events[-3:]]}
    return answer


async def one(client: aiohttp.ClientSession, kind: str, n: int) -> str:
    """Run one request of a scenario; returns "ok" when the outcome is the one the scenario defines."""
    stream = SCENARIOS[kind][1]
    prompt = f"{kind}:{n}"
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    async with client.post("/v1/chat/completions", json=body) as response:
        if not stream or kind == "html":
            raw = await response.read()
            error = json.loads(raw).get("error") if response.status >= 400 else None
            if kind == "plain":
                ok = (
                    response.status == 200
                    and json.loads(raw)["choices"][0]["message"]["content"] == f"answer to {prompt}"
                )
            elif kind == "overloaded":
                ok = response.status == 503 and response.headers.get("x-should-retry") == "false"
            elif kind == "html":
                ok = response.status == 502 and error is not None and "text/html page" in error["message"]
            else:  # malformed
                ok = response.status == 502 and error is not None and "not JSON" in error["message"]
            return "ok" if ok else f"{kind}: {response.status} {raw[:200]!r}"
        if response.status != 200:
            return f"{kind}: {response.status} {(await response.read())[:200]!r}"
        lines: list[str] = []
        async for raw_line in response.content:
            line = raw_line.decode().rstrip("\r\n")
            if line:
                lines.append(line)
                if kind == "client_quits":
                    return "ok"  # leaving the block with the body unread closes the connection mid-stream
    content = "".join(
        (c["delta"].get("content") or "")
        for line in lines
        if line.startswith("data: {") and "choices" in line
        for c in json.loads(line[6:]).get("choices", [])
    )
    if kind == "stream":
        ok = lines[-1] == "data: [DONE]" and content == f"answer to {prompt}"
    else:  # reset_stream: partial output, then an error line, never [DONE]
        ok = "data: [DONE]" not in lines and "lost mid-stream" in lines[-1]
    return "ok" if ok else f"{kind}: {lines[-3:]}"


def plan(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    kinds, weights = zip(*((k, share) for k, (share, _) in SCENARIOS.items()), strict=True)
    return rng.choices(kinds, weights=weights, k=count)


async def drive(url: str, kinds: list[str], offset: int) -> Counter[str]:
    """Send `kinds` over CONCURRENCY connections. The client is aiohttp's: httpx's costs several milliseconds of CPU
    per request at this concurrency, which made the client, not the proxy, the bottleneck of the whole run."""
    results: Counter[str] = Counter()
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, kind in enumerate(kinds):
        queue.put_nowait((offset + i, kind))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                n, kind = queue.get_nowait()
                results[await one(client, kind, n)] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def connections(pid: int, port: int) -> int:
    """TCP connections of the proxy process to `port` (the fake Anthropic) that are not closed yet."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def settle(url: str, fake: FakeAnthropic, timeout: float = 5.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = metric_samples(url)
        idle = m["proxy_upstream_inflight"] == 0 and fake.active == 0 and fake.open_streams == 0
        if idle or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def test_soak(fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.default = reply_for
    fake_port = int(fake.url.rsplit(":", 1)[1])
    env = {
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "PROXY_MAX_RETRIES": "1",
        "PROXY_MAX_CONCURRENCY": "32",
        "PROXY_SHUTDOWN_GRACE": "2",
    }
    kinds = plan(REQUESTS, seed=8)
    with serve_process(env, tmp_path) as served:
        process = psutil.Process(served.process.pid)
        started = time.monotonic()
        warm = asyncio.run(drive(served.url, kinds[:WARMUP], 0))
        base = settle(served.url, fake)
        rss_base = process.memory_info().rss
        rest = asyncio.run(drive(served.url, kinds[WARMUP:], WARMUP))
        elapsed = time.monotonic() - started
        end = settle(served.url, fake)
        rss_end = process.memory_info().rss
        pool = connections(served.process.pid, fake_port)

    results = warm + rest
    failures = {k: v for k, v in results.items() if k != "ok"}
    report = (
        f"{REQUESTS} requests in {elapsed:.1f} s ({REQUESTS / elapsed:.0f}/s); "
        f"RSS {rss_base / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB; "
        f"tasks {base['proxy_event_loop_tasks']:.0f} -> {end['proxy_event_loop_tasks']:.0f}; "
        f"upstream connections {pool}"
    )
    print(report)
    (tmp_path.parent / "soak-report.txt").write_text(report + "\n")
    assert not failures, failures  # every request had exactly its scenario's outcome: no error beyond the injected
    assert results["ok"] == REQUESTS
    # nothing leaked: no task, no slot, no upstream request left behind
    assert end["proxy_event_loop_tasks"] <= base["proxy_event_loop_tasks"] + 2
    assert end["proxy_upstream_inflight"] == 0 and end["proxy_upstream_queued"] == 0
    assert fake.active == 0 and fake.open_streams == 0
    assert pool <= 2 * CONCURRENCY  # idle keep-alive connections only, bounded by the load's concurrency
    # flat memory: growth after the warm-up stays small however many requests follow
    assert rss_end - rss_base < 24 * 2**20, report
    # the metrics agree with what was sent
    chats = sum(v for k, v in end.items() if k.startswith('proxy_requests_total{model="claude-sonnet-4-6"'))
    assert chats == REQUESTS
