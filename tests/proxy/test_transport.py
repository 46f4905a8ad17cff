"""The lean httpx transport against real sockets: keep-alive, streaming, timeouts, broken servers, early closes."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from claude_proxy.transport import LeanTransport, environment_proxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length) if length else b""


def response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), **kwargs)  # type: ignore[arg-type]


async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(reader)
            seen.append(body)
            writer.write(response(b"echo:" + body, b"request-id: req_1\r\n"))
            await writer.drain()

    async with serve(handler) as server, client() as http:
        for i in range(3):
            answer = await http.post(f"{server.url}/v1/messages", content=b'{"n":%d}' % i)
            assert answer.status_code == 200
            assert answer.content == b'echo:{"n":%d}' % i
            assert answer.headers["request-id"] == "req_1"
        assert seen == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
        assert server.connections == 1


async def test_chunked_body_is_streamed_as_it_arrives() -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client closes

    async with serve(handler) as server, client() as http:
        async with http.stream("POST", server.url, content=b"{}") as answer:
            chunks = answer.aiter_raw()
            assert await chunks.__anext__() == b"first"  # before the server sent the rest
            go_on.set()
            rest = [chunk async for chunk in chunks]
        assert b"".join(rest) == b"second"


async def test_large_body_arrives_whole_with_reading_paused_and_resumed() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, well past the pause threshold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(payload))
        await writer.drain()
        await reader.read()

    async with serve(handler) as server, client() as http:
        async with http.stream("GET", server.url) as answer:
            received = bytearray()
            async for chunk in answer.aiter_raw():
                received += chunk
                await asyncio.sleep(0)  # a slow reader
        assert bytes(received) == payload


async def test_read_timeout_before_the_head_and_between_chunks() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serve(silent) as server, client(timeout=httpx.Timeout(5, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(server.url, content=b"{}")

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with (
        serve(stalls) as server,
        client(timeout=httpx.Timeout(5, read=0.2)) as http,
        http.stream("POST", server.url, content=b"{}") as answer,
    ):
        with pytest.raises(httpx.ReadTimeout):
            [chunk async for chunk in answer.aiter_raw()]


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")


async def test_server_closing_early_is_a_transport_error() -> None:
    async def no_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with serve(no_answer) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url, content=b"{}")

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async with serve(cut) as server, client() as http:
        with pytest.raises(httpx.ReadError):
            await http.post(server.url, content=b"{}")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serve(garbage) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url, content=b"{}")


async def test_body_delimited_by_the_connection_end() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async with serve(old_style) as server, client() as http:
        answer = await http.get(server.url)
        assert answer.content == b"all of it"


async def test_body_delimited_by_the_connection_end_but_reset_is_an_error() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart of it")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        writer.transport.abort()

    async with serve(reset) as server, client() as http:
        with pytest.raises(httpx.ReadError):
            await http.get(server.url)


async def test_a_response_closed_early_closes_its_connection_and_the_next_request_opens_another() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"4\r\ndata\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with serve(endless) as server, client() as http:
        async with http.stream("POST", server.url, content=b"{}") as answer:
            await answer.aiter_raw().__anext__()
        await asyncio.wait_for(server.closed.wait(), 2)  # the upstream saw the request end
        async with http.stream("POST", server.url, content=b"{}") as answer:
            await answer.aiter_raw().__anext__()
        assert server.connections == 2


async def test_connection_close_answers_are_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"ok", b"connection: close\r\n"))
        await writer.drain()

    async with serve(once) as server, client() as http:
        assert (await http.get(server.url)).content == b"ok"
        assert (await http.get(server.url)).content == b"ok"
        assert server.connections == 2


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"ok"))  # claims keep-alive, then hangs up
        await writer.drain()

    async with serve(one_per_connection) as server, client() as http:
        assert (await http.get(server.url)).content == b"ok"
        await asyncio.wait_for(server.closed.wait(), 2)
        await asyncio.sleep(0.05)  # the close reaches the client's loop
        assert (await http.get(server.url)).content == b"ok"
        assert server.connections == 2


async def test_pooled_connection_closing_locally_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(response(b"ok"))
            await writer.drain()

    lean = LeanTransport()
    async with serve(handler) as server, httpx.AsyncClient(transport=lean) as http:
        assert (await http.get(server.url)).content == b"ok"
        ((origin, (pooled,)),) = lean._idle.items()
        assert pooled.transport is not None
        pooled.transport.close()  # closing; connection_lost has not run yet (it is only scheduled)
        assert not pooled.closed
        assert lean._take_idle(origin) is None  # so it is dropped, not handed out
        with pytest.raises(httpx.RemoteProtocolError):  # and were it handed out, it would fail at once, not hang
            await pooled.send(b"GET / HTTP/1.1\r\n\r\n", b"", None)
        answer = await asyncio.wait_for(http.get(server.url), 2)
        assert answer.content == b"ok"
        assert server.connections == 2


def test_environment_proxy_applies_unless_bypassed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert not environment_proxy("https://api.anthropic.com")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_proxy("https://api.anthropic.com")
    assert not environment_proxy("http://127.0.0.1:9000")
    monkeypatch.setenv("NO_PROXY", "api.anthropic.com")
    assert not environment_proxy("https://api.anthropic.com")


# ---- fetch: whole answers without httpx's request and response objects ----------------------------------------------

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


async def test_fetch_sends_host_length_and_headers_and_reuses_the_connection() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            length = int(next(x for x in head.split(b"\r\n") if x.startswith(b"content-length:")).split(b":")[1])
            body = await reader.readexactly(length)
            extra = b"x-multi: a\r\nX-Multi: b\r\nRequest-Id: req_9\r\n"
            writer.write(response(b"echo:" + body, extra))
            await writer.drain()

    lean = LeanTransport()
    try:
        async with serve(handler) as server:
            url = httpx.URL(f"{server.url}/v1/messages")
            # httpx's default accept-encoding offers br and zstd when their packages are installed
            headers = {"x-api-key": "k", "anthropic-version": "v", "Accept-Encoding": "gzip, deflate, br, zstd"}
            for i in range(3):
                reply = await lean.fetch(url, headers, b'{"n":%d}' % i, TIMEOUTS)
                assert (reply.status_code, reply.content) == (200, b'echo:{"n":%d}' % i)
                assert await reply.aread() == reply.content
                assert reply.headers["request-id"] == "req_9"  # names are lower-cased
                assert reply.headers["x-multi"] == "a, b"  # repeated headers are joined
            assert server.connections == 1
    finally:
        await lean.aclose()
    port = url.port
    first = heads[0].split(b"\r\n")
    assert first[0] == b"POST /v1/messages HTTP/1.1"
    assert f"host: 127.0.0.1:{port}".encode() in first
    assert b"content-length: 7" in first
    assert b"x-api-key: k" in first and b"anthropic-version: v" in first
    # only the encodings fetch can decode are asked for
    assert [x for x in first if x.lower().startswith(b"accept-encoding")] == [b"accept-encoding: gzip, deflate"]


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", lambda b: __import__("gzip").compress(b)),
        ("deflate", lambda b: __import__("zlib").compress(b)),
        ("deflate", lambda b: __import__("zlib").compress(b, wbits=-15)),  # raw deflate, as some servers send it
        ("identity", lambda b: b),
    ],
)
async def test_fetch_decodes_gzip_and_deflate(encoding: str, encode: Callable[[bytes], bytes]) -> None:
    payload = b'{"content":[{"type":"text","text":"' + b"hello " * 200 + b'"}]}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(encode(payload), b"content-encoding: %s\r\n" % encoding.encode()))
        await writer.drain()
        await reader.read()

    lean = LeanTransport()
    try:
        async with serve(handler) as server:
            reply = await lean.fetch(httpx.URL(f"{server.url}/v1/messages"), {}, b"{}", TIMEOUTS)
            assert reply.content == payload
    finally:
        await lean.aclose()


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_fetch_refuses_a_corrupt_or_unknown_encoding(encoding: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"not compressed at all", b"content-encoding: %s\r\n" % encoding.encode()))
        await writer.drain()
        await reader.read()

    lean = LeanTransport()
    try:
        async with serve(handler) as server:
            with pytest.raises(httpx.RemoteProtocolError, match=encoding):
                await lean.fetch(httpx.URL(f"{server.url}/v1/messages"), {}, b"{}", TIMEOUTS)
    finally:
        await lean.aclose()


async def test_fetch_read_timeout_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")  # and then nothing
        await writer.drain()
        await reader.read()

    lean = LeanTransport()
    try:
        async with serve(handler) as server:
            with pytest.raises(httpx.ReadTimeout):
                await lean.fetch(httpx.URL(f"{server.url}/v1/messages"), {}, b"{}", {**TIMEOUTS, "read": 0.2})
            await asyncio.wait_for(server.closed.wait(), 5)  # the half-read connection was closed, not pooled
            assert lean._idle.get(("http", "127.0.0.1", httpx.URL(server.url).port)) in (None, [])
    finally:
        await lean.aclose()


@pytest.mark.parametrize("value", ["token\r\nx-injected: 1", "token\nx-injected: 1"])
async def test_fetch_refuses_a_header_value_that_would_split_the_request(value: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    lean = LeanTransport()
    try:
        async with serve(handler) as server:
            with pytest.raises(httpx.LocalProtocolError):
                await lean.fetch(httpx.URL(f"{server.url}/v1/messages"), {"x-api-key": value}, b"{}", TIMEOUTS)
            assert server.connections == 0  # refused before anything was sent
    finally:
        await lean.aclose()
