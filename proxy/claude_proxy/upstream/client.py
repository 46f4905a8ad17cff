"""The HTTP client towards Anthropic: one aiohttp session for the app's lifetime, for every request.

- One keep-alive pool (`TCPConnector`), sized from the proxy's own concurrency bound, with Happy Eyeballs (RFC 8305:
  a host whose IPv6 route is broken falls back to IPv4 after a short delay instead of the whole connect timeout).
- An HTTP(S) proxy from the environment (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, minus `NO_PROXY`) is resolved
  once, for the one upstream origin, when the client is built; HTTPS goes through it with `CONNECT`.
- TLS is verified against `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else certifi's bundle (else the system store).
- No cookie jar: one caller's upstream cookies never reach another caller's requests.
- Header values with CR or LF are refused before anything is sent (`check_headers`).
- Whole answers may be compressed and are decoded; streams are asked for uncompressed (`accept-encoding: identity`).

Failures are this module's own `TransportError` subclasses, named as the exchange failed (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `ReadError`, `RemoteProtocolError`, `LocalProtocolError`), so the upstream layer
and the relay map them without knowing the library underneath.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

KEEPALIVE_EXPIRY = 60.0  # seconds an idle upstream connection is kept for reuse
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended connection attempt delay
STREAM_ACCEPT = {"accept-encoding": "identity"}
_IDLE_CHECKS = 4  # checks of a stream's silence per idle timeout


class TransportError(Exception):
    """The exchange with the upstream failed below HTTP: no answer, or a broken one."""

    timeout = False
    retry_safe = True  # whether trying again cannot repeat work the upstream already started


class ConnectError(TransportError):
    """No connection could be made (refused, DNS, TLS handshake or verification, proxy refused)."""


class ConnectTimeout(TransportError):
    timeout = True


class ReadTimeout(TransportError):
    """The upstream sent nothing for the read timeout (a slow or stalled answer)."""

    timeout = True
    retry_safe = False


class ReadError(TransportError):
    """The connection broke while the answer was being read (reset, closed early)."""


class RemoteProtocolError(ReadError):
    """The upstream's answer is not valid HTTP (or its body encoding is broken)."""


class LocalProtocolError(TransportError):
    """The request itself cannot be sent (a header value that would split it)."""

    retry_safe = False


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a header name or value holding CR or LF: written out, it would end the header line early and let
    whatever follows pose as another header."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise LocalProtocolError(f"illegal header value for {name.splitlines()[0]!r}")


def _failure(exc: BaseException) -> TransportError:
    """This module's error for an aiohttp (or socket) failure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout("connecting to the upstream timed out")
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError/ServerTimeoutError are TimeoutErrors too
        return ReadTimeout("the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientHttpProxyError):
        return ConnectError(f"cannot connect to the upstream: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):  # an unparsable status line or head
        return RemoteProtocolError(f"malformed HTTP response from the upstream ({exc.message})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RemoteProtocolError(f"the upstream's response body is broken ({exc})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ReadError("the upstream closed the connection before the response was complete")
    return ReadError(f"the connection to the upstream failed ({type(exc).__name__})")


_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)


class Response:
    """One upstream answer: `status_code`, case-insensitive `headers`, and either the whole `content` (from
    `Client.fetch`) or a body still to read in `chunks()` (from `Client.open`), which must then be closed."""

    __slots__ = ("_idle", "_lost", "_quiet", "_raw", "_seen", "_timer", "_waiting", "content", "headers", "status_code")

    def __init__(self, raw: aiohttp.ClientResponse, content: bytes | None = None) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        self.content = content
        self._lost: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False  # chunks() is waiting for the upstream (not for its own caller)

    def _watch_idle(self, seconds: float) -> None:
        """Fail the body's read with a timeout once the upstream has sent nothing for `seconds` while it was awaited.

        One timer per answer, checking a few times a period whether bytes arrived, rather than one timer cancelled
        and re-armed on every network read (what aiohttp's own read timeout does, about a twentieth of a relayed
        event's cost). A stall is never reported early, and at most a quarter period late. Time spent waiting on the
        caller (a slow client holding the relay) is not the upstream's silence and does not count."""
        loop = asyncio.get_running_loop()
        self._idle, self._seen, self._quiet = seconds, -1, loop.time()
        self._timer = loop.call_later(seconds / _IDLE_CHECKS, self._check_idle)

    def _check_idle(self) -> None:
        stream, loop = self._raw.content, asyncio.get_running_loop()
        now = loop.time()
        if not self._waiting or stream.total_bytes != self._seen:
            self._seen, self._quiet = stream.total_bytes, now
        elif now - self._quiet >= self._idle * (1 - 1e-9):
            self._timer = None
            stream.set_exception(aiohttp.SocketTimeoutError(f"no data for {self._idle:g} s"))
            return
        self._timer = loop.call_later(self._idle / _IDLE_CHECKS, self._check_idle)

    def _watch_close(self) -> None:
        """For a body that ends with the connection (neither a length nor chunked), keep the connection's closing
        future: the library takes any end of such a body as complete, a reset included, so that is told apart
        here."""
        headers = self.headers
        if "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower():
            return
        connection = self._raw.connection
        if connection is not None and connection.protocol is not None:
            self._lost = connection.protocol.closed

    def _reset(self) -> bool:
        lost = self._lost
        return lost is not None and lost.done() and not lost.cancelled() and lost.exception() is not None

    async def read(self) -> bytes:
        """The whole body (read once); the connection goes back to the pool when it is complete."""
        if self.content is None:
            try:
                self.content = await self._raw.read()
            except _FAILURES as exc:
                self._raw.close()
                raise _failure(exc) from None
        return self.content

    async def next_chunk(self) -> bytes:
        """What has arrived of the body since the last call (waiting for it when nothing has); b"" at its end."""
        self._waiting = True
        try:
            chunk = await self._raw.content.readany()
        except _FAILURES as exc:
            raise _failure(exc) from None
        finally:
            self._waiting = False
        if not chunk and self._reset():
            raise ReadError("the upstream reset the connection before the response was complete")
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (`next_chunk` until the end)."""
        while chunk := await self.next_chunk():
            yield chunk

    async def close(self) -> None:
        """Done with the answer: a body read to its end leaves the connection pooled; one cut short closes it
        (which ends the upstream request)."""
        raw = self._raw
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reset()  # retrieves a closing error, which is then not reported as unhandled
        if raw.content.at_eof():
            raw.release()
        else:
            raw.close()


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float | None

    def client_timeout(self) -> aiohttp.ClientTimeout:
        # `sock_connect` bounds each connection attempt, `sock_read` every wait for data. The wait for a pooled
        # connection is not bounded here: the pool holds more connections than the proxy admits requests at once.
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect, sock_read=self.read)


def ssl_context() -> ssl.SSLContext:
    """A verifying TLS context: `SSL_CERT_FILE`/`SSL_CERT_DIR` when either is set, else certifi's bundle."""
    cafile, capath = os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def environment_proxy(url: URL) -> tuple[URL, aiohttp.BasicAuth | None] | None:
    """The HTTP proxy the environment sets for `url` (`<scheme>_proxy`, then `all_proxy`), unless `no_proxy`
    exempts its host; credentials in the proxy's URL become its basic auth."""
    proxies = urllib.request.getproxies()
    found = proxies.get(url.scheme) or proxies.get("all")
    if not found or (url.host and urllib.request.proxy_bypass(url.host)):
        return None
    proxy = URL(found if "://" in found else f"http://{found}")
    auth = aiohttp.BasicAuth(proxy.user or "", proxy.password or "") if proxy.user else None
    return proxy.with_user(None), auth


class Client:
    """The session and what every request to the one upstream origin shares."""

    def __init__(self, base_url: str, *, max_connections: int, ssl: ssl.SSLContext | None = None) -> None:
        self.base = URL(base_url.rstrip("/"))
        self._ssl = ssl
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}

    async def start(self) -> None:
        found = environment_proxy(self.base)
        if found is not None:
            self._proxy = {"proxy": found[0], "proxy_auth": found[1]}
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
            ssl=self._ssl or ssl_context(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # the environment's proxy is resolved once above, not per request
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str) -> URL:
        return self.base.with_path(self.base.path.rstrip("/") + path, encoded=True)

    async def _send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        params: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        assert self._session is not None, "the client is not started"
        check_headers(headers)
        try:
            return await self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=timeout,
                allow_redirects=False,
                **self._proxy,
            )
        except _FAILURES as exc:
            raise _failure(exc) from None

    async def fetch(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """One request, its answer read whole (and decoded)."""
        raw = await self._send(method, url, headers, body, timeout, params)
        response = Response(raw)
        await response.read()
        return response

    async def open(self, url: URL, headers: Mapping[str, str], body: bytes, timeout: aiohttp.ClientTimeout) -> Response:
        """A POST whose answer is read as it arrives; the caller must `close()` it. `timeout.sock_read` bounds the
        wait for the head and then every wait for body data (see `Response._watch_idle`)."""
        idle = timeout.sock_read
        if idle is None:
            response = Response(await self._send("POST", url, {**headers, **STREAM_ACCEPT}, body, timeout))
        else:
            head = aiohttp.ClientTimeout(total=None, sock_connect=timeout.sock_connect, sock_read=None)
            try:
                async with asyncio.timeout(idle):
                    raw = await self._send("POST", url, {**headers, **STREAM_ACCEPT}, body, head)
            except TimeoutError:
                raise ReadTimeout("the upstream did not answer in time") from None
            response = Response(raw)
            response._watch_idle(idle)
        response._watch_close()
        return response
