"""Limits towards clients, against the real server: body size, deadline and budget, header timeout, keep-alive, and
upstream concurrency with its bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import httpx
import pytest

from claude_proxy.server.limits import Limiter, Overloaded
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, render_sse, text
from tests.proxy.http_support import connect, read_response

ASK = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}
JSON = {"content-type": "application/json"}


def head(path: str, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json"]
    if length is not None:
        lines.append(f"content-length: {length}")
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_declared_oversized_body_is_413_before_it_is_read(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_BODY_BYTES="100000")
    with connect(url) as sock:
        sock.sendall(head("/v1/chat/completions", length=40_000_000) + b"{" + b" " * 1000)
        status, headers, body = read_response(sock)
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and "100000" in error["message"]
    assert "x-request-id" in headers
    assert fake.messages_requests == []


def test_chunked_oversized_body_is_refused_while_it_is_still_arriving(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_BODY_BYTES="100000")
    with connect(url) as sock:
        sock.sendall(head("/v1/chat/completions", chunked=True))
        piece = b"x" * 30_000
        for _ in range(4):  # 120 kB: past the limit, but the body is not finished (no terminating chunk)
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            time.sleep(0.02)
        status, _, body = read_response(sock)
    assert status == 413  # answered before the body ended: it was read piece by piece, never held whole
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert fake.messages_requests == []


def test_body_at_the_limit_passes(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_BODY_BYTES="2000")
    body = json.dumps(ASK).encode()
    padded = body[:-1] + b" " * (2000 - len(body)) + b"}"
    assert len(padded) == 2000
    response = httpx.post(f"{url}/v1/chat/completions", content=padded, headers={"content-type": "application/json"})
    assert response.status_code == 200
    response = httpx.post(
        f"{url}/v1/chat/completions", content=padded + b" ", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_stalled_body_gets_408(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_BODY_TIMEOUT="0.3")
    with connect(url) as sock:
        sock.sendall(head("/v1/chat/completions", length=500) + b'{"model": ')
        started = time.monotonic()
        status, _, body = read_response(sock)
    assert status == 408
    assert 0.25 < time.monotonic() - started < 3
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert fake.messages_requests == []


def test_slow_headers_get_408_and_the_connection_closed(proxy: ProxyFactory) -> None:
    url = proxy(_full_server=True, PROXY_HEADER_TIMEOUT="0.4", PROXY_SHUTDOWN_GRACE="1")
    with connect(url) as sock:  # connects and says nothing
        started = time.monotonic()
        status, _, body = read_response(sock)
        assert status == 408 and b"headers not received" in body
        assert 0.3 < time.monotonic() - started < 3
        assert sock.recv(10) == b""  # closed
    with connect(url) as sock:  # starts a request and never finishes its head
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        status, _, _ = read_response(sock)
        assert status == 408
    with connect(url) as sock:  # a complete request on a slow start is served; then the next head is timed again
        time.sleep(0.2)
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body) == {"status": "ok"}
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        status, _, _ = read_response(sock)
        assert status == 408


def test_idle_keep_alive_connections_are_closed(proxy: ProxyFactory) -> None:
    url = proxy(_full_server=True, PROXY_KEEPALIVE_TIMEOUT="1", PROXY_HEADER_TIMEOUT="10", PROXY_SHUTDOWN_GRACE="1")
    with connect(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(10) == b""
        assert time.monotonic() - started < 3


def slow_reply(seconds: float) -> Any:
    def reply(record: Any) -> dict[str, Any]:
        time.sleep(seconds)
        return message(text("slow"))

    return reply


def test_concurrency_limit_queue_and_429_with_retry_after(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_CONCURRENCY="2", PROXY_MAX_QUEUE="1", PROXY_QUEUE_TIMEOUT="5")
    fake.script(*(slow_reply(0.8) for _ in range(3)))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            running = [asyncio.create_task(client.post("/v1/chat/completions", json=ASK)) for _ in range(3)]
            await asyncio.sleep(0.3)  # two hold the slots, one waits in the queue
            refused = await client.post("/v1/chat/completions", json=ASK)
            metrics = await client.get("/metrics")
            assert "proxy_upstream_inflight 2.0" in metrics.text
            assert "proxy_upstream_queued 1.0" in metrics.text
            return [refused, *await asyncio.gather(*running)]

    started = time.monotonic()
    refused, *served = asyncio.run(run())
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "proxy_overloaded"
    assert [r.status_code for r in served] == [200, 200, 200]
    assert time.monotonic() - started >= 1.6  # the queued one waited for a slot, then ran
    assert len(fake.messages_requests) == 3
    assert 'proxy_rejected_requests_total{reason="queue_full"} 1.0' in httpx.get(f"{url}/metrics").text


def test_queue_wait_is_bounded(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_CONCURRENCY="1", PROXY_MAX_QUEUE="4", PROXY_QUEUE_TIMEOUT="0.3")
    fake.script(slow_reply(1.5))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            first = asyncio.create_task(client.post("/v1/chat/completions", json=ASK))
            await asyncio.sleep(0.2)
            waited = await client.post("/v1/chat/completions", json={**ASK, "stream": True})
            return [waited, await first]

    waited, first = asyncio.run(run())
    assert waited.status_code == 429 and "PROXY_QUEUE_TIMEOUT" in waited.json()["error"]["message"]
    assert waited.headers["retry-after"]
    assert first.status_code == 200
    assert len(fake.messages_requests) == 1


def test_stream_holds_its_slot_until_it_ends(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_CONCURRENCY="1", PROXY_MAX_QUEUE="0")
    events = list(render_sse(message(text("a streamed answer"))))
    fake.script({**message(text("a streamed answer")), "_events": [*events[:-3], 1.0, *events[-3:]]})
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**ASK, "stream": True}) as stream:
        assert stream.status_code == 200
        # the stream is open (its body not read yet): the one slot is taken
        assert httpx.post(f"{url}/v1/chat/completions", json=ASK).status_code == 429
        assert b"[DONE]" in stream.read()
    assert httpx.post(f"{url}/v1/chat/completions", json=ASK).status_code == 200


async def test_limiter_hands_slots_over_in_order_and_survives_cancellation() -> None:
    limiter = Limiter(1, 3, 5.0)
    first = await limiter.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        slot = await limiter.acquire()
        order.append(n)
        await asyncio.sleep(0.01)
        slot.release()

    tasks = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert limiter.queued == 3
    with pytest.raises(Overloaded):
        await limiter.acquire()  # queue full
    tasks[1].cancel()  # a waiter that gives up leaves the queue
    await asyncio.sleep(0.01)
    assert limiter.queued == 2
    first.release()
    first.release()  # idempotent
    await asyncio.gather(tasks[0], tasks[2])
    assert order == [0, 2]
    assert limiter.active == 0 and limiter.queued == 0


def test_a_dripped_body_gets_408_at_the_deadline_however_it_trickles(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_BODY_TIMEOUT="1.5")
    stop = threading.Event()
    with connect(url) as sock:
        sock.sendall(head("/v1/chat/completions", length=500) + b"{")

        def drip() -> None:  # a byte every 0.3 s: never silent for long, never done
            with contextlib.suppress(OSError):
                while not stop.wait(0.3):
                    sock.sendall(b" ")

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            status, _, body = read_response(sock, timeout=10)
        finally:
            stop.set()
            dripper.join(5)
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "PROXY_BODY_TIMEOUT" in error["message"]
    assert fake.messages_requests == []


def test_bodies_held_at_once_are_bounded_by_the_budget(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_BODY_BUDGET_MB="1", PROXY_MAX_BODY_BYTES="1000000")
    padded = json.dumps({**ASK, "user": "u" * 400_000}).encode()
    with connect(url) as holder:  # 800 kB of a 1 MB body sent, the rest never: held until the body deadline
        holder.sendall(head("/v1/chat/completions", length=1_000_000) + b"{" + b" " * 800_000)
        deadline = time.monotonic() + 10
        while True:  # until the proxy has read what was sent
            refused = httpx.post(f"{url}/v1/chat/completions", content=padded, headers=JSON, timeout=10)
            if refused.status_code == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "proxy_overloaded" and "PROXY_BODY_BUDGET_MB" in error["message"]
        assert httpx.post(f"{url}/v1/chat/completions", json=ASK).status_code == 200  # a small body still fits
    deadline = time.monotonic() + 10
    while True:  # the holder left: what it held is given back
        answer = httpx.post(f"{url}/v1/chat/completions", content=padded, headers=JSON, timeout=10)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 200
    assert 'proxy_rejected_requests_total{reason="body_budget"}' in httpx.get(f"{url}/metrics").text
