"""Waiting on the upstream while watching the client (`until_disconnect`), and the event-stream response
(`SSEResponse`): its head through the middleware and its body straight to the server, and a pump closed once whenever
the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from claude_proxy.server.limits import ClientGone
from claude_proxy.server.streaming import SERVER_SEND, SSEResponse, until_disconnect


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
