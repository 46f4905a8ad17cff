"""What the server bounds before the app sees a request, against the server `claude-proxy serve` runs (uvicorn on
127.0.0.1) and raw sockets that misbehave: the size and line count of a request head (431, refused while the head
is still arriving), the number of connections, and a client that stops reading its stream (cut, the slot and the
upstream request freed)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import httpx

from tests.conftest import ProxyFactory, metric_samples
from tests.fakes.anthropic import FakeAnthropic, message, render_sse, text
from tests.proxy.http_support import connect, read_response

ASK = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}
SERVER = {"_full_server": True, "PROXY_SHUTDOWN_GRACE": "1"}


class Flood:
    """Sends `total` bytes of `X-H: v` header lines on `sock` from a thread, until done or the server closes."""

    def __init__(self, sock: socket.socket, total: int) -> None:
        self.sock, self.total = sock, total
        self.sent = 0
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        line = b"X-H: v\r\n" * 8192  # 64 KiB
        try:
            self.sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            while self.sent < self.total:
                self.sock.sendall(line)
                self.sent += len(line)
        except OSError as exc:
            self.error = exc


def test_a_huge_request_head_is_refused_with_431_while_it_is_still_arriving(proxy: ProxyFactory) -> None:
    url = proxy(**SERVER, PROXY_MAX_HEADER_BYTES="16384", PROXY_MAX_HEADERS="10000")
    with connect(url) as sock:
        flood = Flood(sock, 64 * 1024 * 1024)
        status, headers, body = read_response(sock, timeout=10)
        assert status == 431
        assert headers["connection"] == "close"
        error = json.loads(body)["error"]
        assert error["code"] == "header_too_large" and "PROXY_MAX_HEADER_BYTES" in error["message"]
        flood.thread.join(15)
        # The server stopped taking the head long before 64 MiB of it were sent: the client's sending failed.
        assert flood.error is not None and flood.sent < 64 * 1024 * 1024
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_head_with_too_many_header_lines_is_refused_with_431(proxy: ProxyFactory) -> None:
    url = proxy(**SERVER, PROXY_MAX_HEADERS="20")
    with connect(url) as sock:  # small lines, well under the size limit: the count refuses it
        sock.sendall(
            b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(30)) + b"\r\n"
        )
        status, _, body = read_response(sock)
    assert status == 431 and "PROXY_MAX_HEADERS" in json.loads(body)["error"]["message"]
    with connect(url) as sock:  # at the limit: served
        lines = b"".join(b"x-%d: v\r\n" % i for i in range(19))
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + lines + b"\r\n")
        assert read_response(sock)[0] == 200


def test_each_head_on_a_keep_alive_connection_has_the_whole_limit(proxy: ProxyFactory) -> None:
    url = proxy(**SERVER, PROXY_MAX_HEADER_BYTES="4096")
    request = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: " + b"p" * 3000 + b"\r\n\r\n"
    with connect(url) as sock:
        for _ in range(5):  # 15 kB of heads in all, each under 4 KiB
            sock.sendall(request)
            assert read_response(sock)[0] == 200


def test_an_oversized_pipelined_head_ends_the_connection_after_the_answer_before_it(proxy: ProxyFactory) -> None:
    url = proxy(**SERVER, PROXY_MAX_HEADER_BYTES="4096")
    with connect(url) as sock:
        first = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        sock.sendall(first + b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"X-H: v\r\n" * 1000)
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body) == {"status": "ok"}  # whole, nothing written into it
        rest = b""
        with contextlib.suppress(ConnectionResetError):
            while piece := sock.recv(65536):
                rest += piece
        assert rest == b""  # then closed


def test_connections_beyond_the_cap_get_503_and_are_closed(proxy: ProxyFactory) -> None:
    url = proxy(**SERVER, PROXY_MAX_CONNECTIONS="5", PROXY_HEADER_TIMEOUT="30")
    idle = [connect(url) for _ in range(5)]
    try:
        time.sleep(0.2)
        with connect(url) as extra:
            status, headers, body = read_response(extra)
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body)["error"]["code"] == "too_many_connections"
            assert extra.recv(10) == b""
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the closed ones no longer count
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def big_stream(megabytes: int, then_pause: float) -> dict[str, Any]:
    """A streamed answer of `megabytes` MB of text in 64 KiB deltas, sent at once, then silent for `then_pause`."""
    words = "y" * (megabytes * 1024 * 1024)
    events = list(render_sse(message(text(words)), piece=65536, ping=False))
    return {**message(text("")), "_events": [*events[:-3], then_pause, *events[-3:]]}


def test_a_stream_whose_client_stops_reading_is_cut_and_frees_its_slot(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    url = proxy(**SERVER, PROXY_SEND_TIMEOUT="1", PROXY_MAX_CONCURRENCY="1", PROXY_MAX_QUEUE="0")
    fake.script(big_stream(24, 120.0))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    host, port = url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    body = json.dumps({**ASK, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    try:
        # The client reads nothing. Its stream holds the one slot until the server drops it: then the slot is free
        # and the upstream stream closed, long before the fake's 120 s pause ends.
        deadline = time.monotonic() + 30
        while True:
            samples = metric_samples(url)
            if samples.get('proxy_rejected_requests_total{reason="send_timeout"}') == 1:
                break
            assert time.monotonic() < deadline, "the stalled stream was never cut"
            time.sleep(0.2)
        assert samples["proxy_upstream_inflight"] == 0
        deadline = time.monotonic() + 10
        while fake.open_streams:
            assert time.monotonic() < deadline, "the upstream stream was left open"
            time.sleep(0.05)
        fake.script(message(text("served")))
        answer = httpx.post(f"{url}/v1/chat/completions", json=ASK, timeout=10)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "served"
        sock.settimeout(10)
        received = 0
        try:  # the stalled connection was dropped: what it still gets ends in a reset or an end of stream
            while piece := sock.recv(1 << 20):
                received += len(piece)
        except ConnectionResetError:
            pass
        assert received < 24 * 1024 * 1024
    finally:
        sock.close()
