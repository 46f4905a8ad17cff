"""The app's edge: the chat route as a plain ASGI handler under the router, with what every route has (405s, a
mounted prefix, the request id and the route label on every answer)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.limits import ClientGone
from claude_proxy.server.logs import ACCESS_LOGGER
from claude_proxy.server.streaming import SERVER_SEND, SSEResponse, until_disconnect
from tests.conftest import API_KEY, ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text

INBOUND = "sk-proxy-edge"


def settings(fake: FakeAnthropic, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "PROXY_API_KEYS": INBOUND, "HOME": str(tmp_path)}
    )


def test_chat_route_answers_through_the_direct_path_with_id_and_route_label(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    fake.script(message(text("hi there")))
    url = proxy(PROXY_API_KEYS=INBOUND)
    answer = openai.OpenAI(base_url=f"{url}/v1", api_key=INBOUND, max_retries=0).chat.completions.with_raw_response
    raw = answer.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}])
    assert raw.parse().choices[0].message.content == "hi there"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-upstream-request-id"]
    assert raw.headers["content-type"] == "application/json"
    # the unprefixed alias is served the same way
    bare = httpx.post(f"{url}/chat/completions", headers={"authorization": f"Bearer {INBOUND}"}, content=b"[1]")
    assert bare.status_code == 400 and bare.json()["error"]["message"] == "request body must be a JSON object"
    records = [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert [(r["route"], r["status"]) for r in records] == [("/v1/chat/completions", 200), ("/chat/completions", 400)]
    assert records[0]["request_id"] == raw.headers["x-request-id"]


def test_other_methods_on_the_chat_route_are_a_405_envelope(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    answer = httpx.get(f"{proxy(PROXY_API_KEYS=INBOUND)}/v1/chat/completions")
    assert answer.status_code == 405
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.headers["x-request-id"].startswith("req_")
    assert fake.requests == []


def test_a_mounted_prefix_still_reaches_the_chat_route(fake: FakeAnthropic, tmp_path: Path) -> None:
    """Behind a prefix (`root_path`) the router strips the prefix and serves the same handler: the same key check
    and the same body errors."""
    with TestClient(create_app(settings(fake, tmp_path)), root_path="/api", base_url="http://proxy") as http:
        refused = http.post("/api/v1/chat/completions", content=b"{}")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        broken = http.post(
            "/api/v1/chat/completions", content=b"{not json", headers={"authorization": f"Bearer {INBOUND}"}
        )
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
        assert broken.headers["x-request-id"].startswith("req_")


async def test_only_waits_longer_than_watch_after_listen_for_the_client_leaving() -> None:
    listened: list[str] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, str]:
        listened.append("receive")
        await gone.wait()
        return {"type": "http.disconnect"}

    async def quick() -> str:
        await asyncio.sleep(0)
        return "answered"

    async def slow() -> str:
        await asyncio.sleep(30)
        return "never"

    assert await until_disconnect(receive, quick, watch_after=0.05) == "answered"
    await asyncio.sleep(0.1)
    assert listened == []  # a quick answer never started a watcher
    waiting = asyncio.ensure_future(until_disconnect(receive, slow, watch_after=0.05))
    await asyncio.sleep(0.1)
    assert listened == ["receive"]  # the longer wait is watched
    gone.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(waiting, 2)


@pytest.mark.parametrize("ending", ["raises another error", "swallows the cancellation"])
async def test_a_disconnect_cancellation_is_taken_back_however_the_work_ends(ending: str) -> None:
    async def receive() -> dict[str, str]:
        return {"type": "http.disconnect"}

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if ending == "raises another error":
                raise RuntimeError("cleanup failed") from None
            return "recovered"
        return "never"

    async def request() -> tuple[str, int]:
        try:
            outcome = await until_disconnect(receive, work, watch_after=0)
        except RuntimeError as exc:
            outcome = str(exc)
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # the task goes on: no cancellation is left pending for it
        return outcome, task.cancelling()

    expected = "cleanup failed" if ending == "raises another error" else "recovered"
    assert await asyncio.wait_for(asyncio.ensure_future(request()), 2) == (expected, 0)


async def test_a_streams_head_goes_through_the_middleware_and_its_body_straight_to_the_server() -> None:
    through_middleware: list[dict[str, object]] = []
    to_server: list[dict[str, object]] = []

    async def wrapped_send(message: dict[str, object]) -> None:
        through_middleware.append(message)

    async def server_send(message: dict[str, object]) -> None:
        to_server.append(message)

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    async def receive() -> dict[str, str]:
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    closed: list[str] = []
    scope = {"type": "http", SERVER_SEND: server_send}
    await SSEResponse(body(), on_close=closed.append)(scope, receive, wrapped_send)  # type: ignore[arg-type]
    assert [m["type"] for m in through_middleware] == ["http.response.start"]
    assert [(m["body"], m["more_body"]) for m in to_server] == [
        (b"data: 1\n\n", True),
        (b"data: 2\n\n", True),
        (b"", False),
    ]
    assert closed == ["done"]


def test_the_app_puts_the_servers_send_in_each_http_scope(fake: FakeAnthropic, tmp_path: Path) -> None:
    """What `SSEResponse` relies on, through the app as served (a streamed answer still gets the access
    middleware's request id: its head went through the middleware)."""
    fake.script(message(text("streamed")))
    with TestClient(create_app(settings(fake, tmp_path)), base_url="http://proxy") as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "claude-sonnet-4-6", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {INBOUND}"},
        ) as answer:
            lines = [line for line in answer.iter_lines() if line]
        assert answer.status_code == 200 and answer.headers["x-request-id"].startswith("req_")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "streamed"


class Counting:
    """A `Pump` that notes what was asked of it."""

    def __init__(self) -> None:
        self.pumped = self.closed = 0

    async def pump(self, send: Any) -> None:
        self.pumped += 1
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(30)

    async def aclose(self) -> None:
        self.closed += 1


async def test_a_pump_is_closed_even_when_the_client_left_before_it_ran() -> None:
    source = Counting()

    async def receive() -> dict[str, str]:
        return {"type": "http.disconnect"}  # gone at once

    async def send(message: dict[str, object]) -> None:
        await asyncio.sleep(30)  # the head never goes out: the body is never pumped

    closed: list[str] = []
    await SSEResponse(source, on_close=closed.append)({"type": "http"}, receive, send)  # type: ignore[arg-type]
    assert (source.pumped, source.closed, closed) == (0, 1, ["client_gone"])


async def test_a_pump_sends_its_own_body_and_is_closed_once_when_the_client_leaves() -> None:
    source = Counting()
    left = asyncio.Event()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, str]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message.get("body") == b"data: 1\n\n":
            left.set()

    await SSEResponse(source)({"type": "http"}, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert (source.pumped, source.closed) == (1, 1)
