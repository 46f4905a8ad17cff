"""Shared fixtures: the fake Anthropic server and the real app served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.serving import build_server
from tests.fakes.anthropic import FakeAnthropic

API_KEY = "sk-ant-api03-test-key"
OAUTH_TOKEN = "sk-ant-oat01-test-token"


def metric_samples(url: str) -> dict[str, float]:
    """The proxy's /metrics page as {'name{labels}': value}."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


@contextmanager
def serve(app: object, settings: Settings | None = None) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server in a thread; yields its base URL. With `settings`, the server is
    the one `claude-proxy serve` runs (header timeout, keep-alive timeout, drain) rather than plain uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server: uvicorn.Server
    if settings is not None:
        server = build_server(app, settings, "127.0.0.1", port, configure_logging=False)  # type: ignore[arg-type]
    else:
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)  # type: ignore[arg-type]
        server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys=(API_KEY,), oauth_tokens=(OAUTH_TOKEN,)) as server:
        yield server


ProxyFactory = Callable[..., str]


@pytest.fixture
def proxy(fake: FakeAnthropic, tmp_path: Path) -> Iterator[ProxyFactory]:
    """`proxy(**env)` starts the real app (API-key auth against the fake by default) and returns its base URL;
    `proxy(_full_server=True, …)` runs it in the server `claude-proxy serve` builds; `proxy(_sleep=f, …)` has the
    upstream layer wait between retries with `f` instead of `asyncio.sleep`."""
    stack: list[object] = []

    def start(
        _full_server: bool = False, _sleep: Callable[[float], Awaitable[object]] | None = None, **env: str
    ) -> str:
        values = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)}
        values.update(env)
        values = {k: v for k, v in values.items() if v is not None and v != "-"}
        settings = Settings.from_env(values)
        app = create_app(settings) if _sleep is None else create_app(settings, sleep=_sleep)
        cm = serve(app, settings if _full_server else None)
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]
