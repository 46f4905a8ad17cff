"""A lean HTTP/1.1 transport for httpx: keep-alive connections on asyncio protocols, parsed by httptools.

httpx stays the seam towards Anthropic (the client, its requests, responses and exceptions, and
`httpx.MockTransport` in tests); only what sits under `AsyncClient` changes. httpcore's default pool walks every
pooled connection, probing each socket, twice per request, so its cost grows with concurrency; here taking an idle
connection is a `list.pop()`, a request is one `write`, and the response is parsed by the same C parser uvicorn
uses. Responses are streamed: body chunks are handed on as they arrive, with reading paused while the reader is
behind, and each wait for data is bounded by the request's read timeout (which is how a stalled stream is cut).

Failures raise httpx's own exceptions (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
`RemoteProtocolError`, `ReadError`), so callers map them as they would httpcore's. A connection goes back to the
pool only when its response was read to the end and both sides allow keep-alive; a response closed early (a client
that went away mid-stream) closes its connection, which ends the upstream request. HTTP proxies from the
environment are not handled here: the app keeps httpx's default transport when one applies.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httptools
import httpx

_HIGH_WATER = 256 * 1024  # buffered response bytes at which reading pauses
_Origin = tuple[str, str, int]
_ACCEPT = b"accept-encoding: gzip, deflate\r\n"  # what `fetch` can decode


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.error: httpx.TransportError | None = None
        self.received = False

    # ---- asyncio protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response from upstream ({exc})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.head_done and not self.complete and not self._delimited():
            self.complete = True  # the body ran to a clean end of the connection, as HTTP/1.0-style responses do
        elif not self.complete:
            if not self.received:
                self._fail(httpx.RemoteProtocolError("upstream closed the connection without sending a response"))
            else:
                self._fail(httpx.ReadError("upstream closed the connection before the response was complete"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ---- httptools callbacks ---------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # ---- used by the transport -------------------------------------------------------------------------------------

    def _delimited(self) -> bool:
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return True
        return False

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout: float | None, on_timeout: type[httpx.TimeoutException]) -> None:
        waiter = self._waiter = self.loop.create_future()
        handle = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise on_timeout("upstream did not answer in time") from None
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def send(self, head: bytes, body: bytes, timeout: float | None) -> None:
        self._reset()
        if not self.usable():  # closed before the request could start: nothing would ever wake a reader
            raise httpx.RemoteProtocolError("upstream connection was closed before the request was sent")
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        if self._drain is not None and not self._drain.done():
            handle = None if timeout is None else self.loop.call_later(timeout, _expire, self._drain)
            try:
                await self._drain
            except TimeoutError:
                raise httpx.WriteTimeout("sending the request upstream timed out") from None
            finally:
                if handle is not None:
                    handle.cancel()
        if self.closed and self.error is not None:
            raise self.error

    async def head(self, timeout: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout, httpx.ReadTimeout)

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """The next body chunk, or None at the end of the body."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= _HIGH_WATER // 4 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait(timeout, httpx.ReadTimeout)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    def __init__(self, pool: LeanTransport, origin: _Origin, conn: _Connection, read_timeout: float | None) -> None:
        self.pool = pool
        self.origin = origin
        self.conn: _Connection | None = conn
        self.read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        if conn is None:
            return
        while True:
            chunk = await conn.next_chunk(self.read_timeout)
            if chunk is None:
                break
            yield chunk
        self._release()

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.pool.release(self.origin, conn)

    async def aclose(self) -> None:
        self._release()


class Reply:
    """A whole upstream answer read by `LeanTransport.fetch`: what the upstream layer reads of an `httpx.Response`
    (`status_code`, `headers`, `content`, `aread`, `aclose`) without building one per request. `headers` is a plain
    dict with lower-case names; a repeated header's values are joined with ", "."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    async def aread(self) -> bytes:
        return self.content

    async def aclose(self) -> None:
        return None


def _decode_content(content: bytes, encoding: str) -> bytes:
    """Undo a gzip or deflate content-encoding (the only ones `fetch` asks for); anything else is a protocol error."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:
                return zlib.decompress(content, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    except zlib.error as exc:
        raise httpx.RemoteProtocolError(f"upstream sent a corrupt {encoding} body ({exc})") from None
    if encoding in ("", "identity"):
        return content
    raise httpx.RemoteProtocolError(f"upstream sent an unsupported content-encoding {encoding!r}")


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive pool for plain and TLS connections (no HTTP proxy, no HTTP/2)."""

    def __init__(
        self,
        *,
        max_keepalive: int = 200,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closing = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.abort()
        return None

    def release(self, origin: _Origin, conn: _Connection) -> None:
        if self._closing or not conn.reusable():
            conn.abort()
            return
        idle = self._idle.setdefault(origin, [])
        if sum(len(v) for v in self._idle.values()) >= self.max_keepalive:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {"ssl": self._ssl_context(), "server_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), host, port, **tls)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return conn

    async def _exchange(
        self, origin: _Origin, head: bytes, body: bytes, timeouts: Mapping[str, float | None]
    ) -> _Connection:
        """Send one request on a pooled (or new) connection and wait for the response head."""
        conn = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            await conn.send(head, body, timeouts.get("write"))
            await conn.head(timeouts.get("read"))
        except BaseException:
            conn.abort()
            raise
        return conn

    async def fetch(
        self, url: httpx.URL, headers: Mapping[str, str], body: bytes, timeouts: Mapping[str, float | None]
    ) -> Reply:
        """POST `body` to `url` and read the whole answer, without httpx's request and response objects.

        `headers` are sent as given, plus `host` and `content-length`, except `accept-encoding`: the request asks for
        gzip and deflate, the encodings decoded here, whatever `headers` offer (httpx's default offers br and zstd
        too when their packages are installed)."""
        origin, target, host = _target(url)
        lines = [b"POST ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\ncontent-length: %d\r\n" % len(body), _ACCEPT]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:  # as h11 refuses them for httpx
                raise httpx.LocalProtocolError(f"illegal header value for {name.splitlines()[0]!r}")
            if name.lower() != "accept-encoding":
                lines += (name.encode("ascii"), b": ", value.encode("latin-1"), b"\r\n")
        lines.append(b"\r\n")
        conn = await self._exchange(origin, b"".join(lines), body, timeouts)
        try:
            chunks = []
            read_timeout = timeouts.get("read")
            while (chunk := await conn.next_chunk(read_timeout)) is not None:
                chunks.append(chunk)
        except BaseException:
            conn.abort()
            raise
        self.release(origin, conn)
        found: dict[str, str] = {}
        for raw_name, raw_value in conn.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            found[name] = f"{found[name]}, {value}" if name in found else value
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if "content-encoding" in found:
            content = _decode_content(content, found["content-encoding"])
        return Reply(conn.status, found, content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin, target, _ = _target(request.url)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        lines = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        conn = await self._exchange(origin, b"".join(lines), body, timeouts)
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, origin, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closing = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()


def _target(url: httpx.URL) -> tuple[_Origin, bytes, bytes]:
    """(origin, request target, host header) of a URL."""
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
    return (scheme, url.host, url.port or (443 if scheme == "https" else 80)), url.raw_path, url.netloc


def environment_proxy(url: str) -> bool:
    """Whether HTTP(S)_PROXY/ALL_PROXY in the environment applies to `url` (then httpx's own transport is used)."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parsed.host)
