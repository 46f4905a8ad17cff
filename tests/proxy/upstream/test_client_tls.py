"""TLS towards the upstream (Anthropic is only reachable over HTTPS): certificate and host name verification with
the upstream client, and the whole proxy talking to an HTTPS upstream trusted through SSL_CERT_FILE."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
import trustme

from claude_proxy.upstream.client import Client, ConnectError, Timeouts
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"hello": "tls"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_url(ca: trustme.CA) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


TIMEOUT = Timeouts(5.0, 5.0).client_timeout()


async def _get(client: Client, path: str = "/") -> bytes:
    response = await client.fetch("GET", client.url(path), {}, None, TIMEOUT)
    assert response.status_code == 200
    return response.content or b""


async def test_client_speaks_tls_and_verifies_the_certificate(ca: trustme.CA, https_url: str) -> None:
    client = Client(https_url, max_connections=4, ssl=_client_context(ca))
    await client.start()
    try:
        assert await _get(client) == b'{"hello": "tls"}'
        assert await _get(client) == b'{"hello": "tls"}'  # over the kept-alive TLS connection
    finally:
        await client.close()
    # default trust store: the test CA is unknown, so the handshake must fail
    client = Client(https_url, max_connections=4)
    await client.start()
    try:
        with pytest.raises(ConnectError):
            await _get(client)
    finally:
        await client.close()


async def test_client_checks_the_host_name(ca: trustme.CA, https_url: str) -> None:
    wrong_name = https_url.replace("localhost", "127.0.0.1")  # the certificate only names localhost
    client = Client(wrong_name, max_connections=4, ssl=_client_context(ca))
    await client.start()
    try:
        with pytest.raises(ConnectError):
            await _get(client)
    finally:
        await client.close()


@pytest.fixture
def https_fake(ca: trustme.CA, fake: FakeAnthropic) -> Iterator[str]:
    """The strict fake Anthropic behind TLS (the fake's own server socket wrapped)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = fake._server
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield fake.url.replace("http://127.0.0.1", "https://localhost")


def test_proxy_over_https_upstream_trusting_a_custom_ca(
    ca: trustme.CA,
    https_fake: str,
    fake: FakeAnthropic,
    proxy: ProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    url = proxy(ANTHROPIC_BASE_URL=https_fake)
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)
    fake.script(message(text("over TLS")), message(text("streamed over TLS")))
    out = c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "over TLS"
    chunks = c.chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "streamed over TLS"
