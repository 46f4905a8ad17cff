"""The upstream HTTP client against real sockets: keep-alive, header checks, compression, and HTTP proxies from the
environment (a small forward proxy here handles CONNECT for HTTPS and absolute-form requests for plain HTTP)."""

from __future__ import annotations

import asyncio
import gzip
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
import trustme

from claude_proxy.upstream.client import Client, ConnectError, LocalProtocolError, ReadError, ReadTimeout, Timeouts
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text

TIMEOUT = Timeouts(5.0, 5.0).client_timeout()
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(
    handler: Handler, context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    scheme = "https" if context else "http"
    server.url = f"{scheme}://{host}:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, (await reader.readexactly(length) if length else b"")


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def echo_server(server_heads: list[bytes], reply: bytes = b'{"ok": true}', extra: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            server_heads.append(head)
            writer.write(answer(reply, extra))
            await writer.drain()

    return handler


@asynccontextmanager
async def started(url: str, **kwargs: object) -> AsyncIterator[Client]:
    client = Client(url, max_connections=8, **kwargs)  # type: ignore[arg-type]
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def test_keep_alive_reuses_one_connection() -> None:
    heads: list[bytes] = []
    async with serve(echo_server(heads)) as server, started(server.url) as client:
        for _ in range(3):
            response = await client.fetch("POST", client.url("/v1/messages"), {"x-a": "1"}, b"{}", TIMEOUT)
            assert (response.status_code, response.content) == (200, b'{"ok": true}')
    assert server.connections == 1 and len(heads) == 3
    assert heads[0].startswith(b"POST /v1/messages HTTP/1.1\r\n") and b"x-a: 1" in heads[0].lower()


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb"])
async def test_a_header_value_with_cr_or_lf_is_refused_before_sending(value: str) -> None:
    heads: list[bytes] = []
    async with serve(echo_server(heads)) as server, started(server.url) as client:
        with pytest.raises(LocalProtocolError):
            await client.fetch("POST", client.url("/v1/messages"), {"x-a": value}, b"{}", TIMEOUT)
        with pytest.raises(LocalProtocolError):
            await client.open(client.url("/v1/messages"), {"x-a": value}, b"{}", TIMEOUT)
    assert server.connections == 0 and heads == []


async def test_whole_answers_may_be_compressed_and_streams_ask_for_none() -> None:
    heads: list[bytes] = []
    packed = gzip.compress(b'{"zipped": true}')
    async with (
        serve(echo_server(heads, packed, b"content-encoding: gzip\r\n")) as server,
        started(server.url) as client,
    ):
        response = await client.fetch("POST", client.url("/v1/messages"), {}, b"{}", TIMEOUT)
        assert response.content == b'{"zipped": true}'
        stream = await client.open(client.url("/v1/messages"), {}, b"{}", TIMEOUT)
        await stream.close()
    assert b"gzip" in heads[0].lower().split(b"accept-encoding:")[1].split(b"\r\n")[0]
    assert b"accept-encoding: identity\r\n" in heads[1].lower()


async def test_a_stream_cut_by_a_reset_is_an_error_not_an_end() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: 1\n\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with serve(handler) as server, started(server.url) as client:
        stream = await client.open(client.url("/v1/messages"), {}, b"{}", TIMEOUT)
        got = b""
        with pytest.raises(ReadError):
            async for chunk in stream.chunks():
                got += chunk
        await stream.close()
    assert got == b"data: 1\n\n"


def paced_stream(*pauses: float) -> Handler:
    """An event stream answer: one event, then one more after each pause, then the end (the server side never
    closes the connection itself, so an end is only ever the chunked terminator)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = b"data: 1\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        for pause in pauses:
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    return handler


async def test_a_silent_stream_times_out_after_the_idle_time_never_before() -> None:
    idle = 0.4
    async with serve(paced_stream(0.1, 5.0)) as server, started(server.url) as client:
        stream = await client.open(client.url("/v1/messages"), {}, b"{}", Timeouts(5.0, idle).client_timeout())
        got, loop = [], asyncio.get_running_loop()
        with pytest.raises(ReadTimeout):
            async for chunk in stream.chunks():
                got.append(chunk)
                last = loop.time()
        waited = loop.time() - last
        await stream.close()
    assert got == [b"data: 1\n\n"] * 2
    assert idle <= waited <= idle * 1.25 + 0.2  # checked a few times a period: never early, at most a quarter late


async def test_a_stream_with_data_more_often_than_the_idle_time_never_times_out() -> None:
    async with serve(paced_stream(*[0.15] * 6)) as server, started(server.url) as client:
        stream = await client.open(client.url("/v1/messages"), {}, b"{}", Timeouts(5.0, 0.4).client_timeout())
        got = [chunk async for chunk in stream.chunks()]
        await stream.close()
    assert b"".join(got) == b"data: 1\n\n" * 7


async def test_time_the_caller_spends_away_is_not_the_upstreams_silence() -> None:
    """The relay is held by a slow client: the upstream's silence counts only while it is awaited."""
    async with serve(paced_stream(1.0)) as server, started(server.url) as client:
        stream = await client.open(client.url("/v1/messages"), {}, b"{}", Timeouts(5.0, 0.4).client_timeout())
        chunks = stream.chunks()
        assert await anext(chunks) == b"data: 1\n\n"
        await asyncio.sleep(0.8)  # away for twice the idle time; the second event comes 0.2 s after the return
        assert await anext(chunks) == b"data: 1\n\n"
        await chunks.aclose()
        await stream.close()


async def test_no_head_within_the_idle_time_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serve(handler) as server, started(server.url) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(ReadTimeout):
            await client.open(client.url("/v1/messages"), {}, b"{}", Timeouts(5.0, 0.3).client_timeout())
        assert 0.3 <= loop.time() - began < 2.0


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with started(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ConnectError):
            await client.fetch("GET", client.url("/"), {}, None, TIMEOUT)


# ---- HTTP proxies from the environment -----------------------------------------------------------------------------


class ForwardProxy(socketserver.ThreadingTCPServer):
    """CONNECT tunnels and absolute-form plain HTTP requests, each relayed to its target; records request lines."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.lines: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        line = head.split(b"\r\n", 1)[0].decode()
        self.server.lines.append(line)  # type: ignore[attr-defined]
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
        else:
            hostport = target.split("://", 1)[1].split("/", 1)[0]
            host, port = hostport.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            rest = head
        if rest:
            upstream.sendall(rest)
        _pipe(client, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 10)
            if not ready:
                return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


@pytest.fixture
def forward_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_https_goes_through_the_environment_proxy_with_connect(
    forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    heads: list[bytes] = []
    async with (
        serve(echo_server(heads), server_context, host="localhost") as server,
        started(server.url, ssl=trust) as client,
    ):
        for _ in range(2):
            response = await client.fetch("POST", client.url("/v1/messages"), {}, b"{}", TIMEOUT)
            assert response.content == b'{"ok": true}'
    port = server.url.rsplit(":", 1)[1]
    assert forward_proxy.lines == [f"CONNECT localhost:{port} HTTP/1.1"]  # one tunnel, kept alive
    assert len(heads) == 2


async def test_plain_http_goes_through_the_proxy_unless_no_proxy_exempts_it(
    forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    heads: list[bytes] = []
    async with serve(echo_server(heads)) as server:
        async with started(server.url) as client:
            await client.fetch("POST", client.url("/v1/messages"), {}, b"{}", TIMEOUT)
        assert forward_proxy.lines == [f"POST {server.url}/v1/messages HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with started(server.url) as client:
            await client.fetch("POST", client.url("/v1/messages"), {}, b"{}", TIMEOUT)
    assert len(forward_proxy.lines) == 1 and len(heads) == 2  # the second went direct


def test_the_proxy_reaches_anthropic_through_an_environment_proxy(
    forward_proxy: ForwardProxy, fake: FakeAnthropic, proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    url = proxy()
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)
    fake.script(message(text("via the proxy")), message(text("streamed via the proxy")))
    ask: list[Any] = [{"role": "user", "content": "hi"}]
    assert c.chat.completions.create(model="claude-sonnet-4-6", messages=ask).choices[0].message.content == (
        "via the proxy"
    )
    chunks = c.chat.completions.create(model="claude-sonnet-4-6", messages=ask, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "streamed via the proxy"
    # both went over one kept-alive connection through the proxy (the SDK's own requests may take it too)
    upstream_lines = [line for line in forward_proxy.lines if "/v1/messages" in line]
    assert upstream_lines == [f"POST {fake.url}/v1/messages HTTP/1.1"]
    assert len(fake.messages_requests) == 2
