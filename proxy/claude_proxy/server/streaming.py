"""Waiting on the upstream while watching the client, and the event-stream response.

`until_disconnect` and `SSEResponse` stop the work when the client leaves or the shutdown grace runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from claude_proxy.errors import ProxyError
from claude_proxy.server.limits import ClientGone, Drain
from claude_proxy.upstream.relay import error_line

T = TypeVar("T")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# A wait shorter than this is not watched for the client leaving: watching costs a task per request, which the many
# quick answers would pay for nothing. A client that leaves a longer wait is noticed at most this late.
WATCH_AFTER = 0.05


async def until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]], drain: Drain | None = None, watch_after: float = WATCH_AFTER
) -> T:
    """Run `work`, cancelling it (and so closing its upstream request) when the client disconnects, or when the
    shutdown grace period runs out.

    The work runs in the request's own task. Once it has run `watch_after` seconds, a watcher task listens for the
    disconnect; the watcher and the grace deadline cancel the request's task through callbacks, whichever comes
    first."""
    current = asyncio.current_task()
    assert current is not None
    loop = current.get_loop()
    state: dict[str, Any] = {"active": True, "why": None, "watcher": None}

    def stop(why: str) -> None:
        if state["active"] and state["why"] is None:
            state["why"] = why
            current.cancel()

    def on_disconnect(watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            stop("client_gone")

    def watch() -> None:
        if state["active"]:
            watcher = state["watcher"] = loop.create_task(_disconnected(receive))
            watcher.add_done_callback(on_disconnect)

    def on_deadline(_: asyncio.Future[None]) -> None:
        stop("shutdown")

    expired = drain.expired if drain is not None else None
    if expired is not None and expired.done():
        raise drain.error()  # type: ignore[union-attr]
    timer = loop.call_later(watch_after, watch) if watch_after > 0 else None
    if timer is None:
        watch()
    if expired is not None:
        expired.add_done_callback(on_deadline)
    try:
        return await work()
    except asyncio.CancelledError:
        if state["why"] == "shutdown":
            raise drain.error() from None  # type: ignore[union-attr]
        if state["why"] == "client_gone":
            raise ClientGone("client disconnected") from None
        raise
    finally:
        state["active"] = False
        if timer is not None:
            timer.cancel()
        if state["watcher"] is not None:
            state["watcher"].cancel()
        if expired is not None:
            expired.remove_done_callback(on_deadline)
        if state["why"] is not None:
            # Our cancellation is taken back however the work ended (raised it, swallowed it, or raised something
            # else meanwhile): the task goes on, and a cancel from anyone else still counts.
            current.uncancel()


SERVER_SEND = "claude_proxy.server_send"  # scope key: the ASGI server's own `send`, below every middleware
# Scope key, set (true) by the server when it dropped the connection because the client read nothing of the answer
# for PROXY_SEND_TIMEOUT (serving.GuardedProtocol): the request then sees its client gone.
SEND_STALLED = "claude_proxy.send_stalled"


class BodyWriter(Protocol):
    """A stream body that sends its own ASGI body messages (`more_body` true) in `pump`, and closes what it reads
    from in `aclose` (called once the response is over, whether or not `pump` ran)."""

    async def pump(self, send: Send) -> None: ...

    async def aclose(self) -> None: ...


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class SSEResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once, even while the upstream is silent, always
    closes its source (which closes the upstream stream, even when the client left before the body began), and
    ends the stream with `error_ending(error)` when the shutdown grace period runs out (chat completions' error line
    by default; the Responses API's `response.failed`, Anthropic's `error` event). `on_close(outcome)` runs once
    at the end, however the response ends: "done" (the body ran out), "client_gone", "client_stalled" (the server
    dropped a client that read nothing for PROXY_SEND_TIMEOUT) or "shutdown"."""

    def __init__(
        self,
        content: AsyncIterator[bytes] | BodyWriter,
        *,
        drain: Drain | None = None,
        on_close: Callable[[str], None] | None = None,
        error_ending: Callable[[ProxyError], bytes] = error_line,
    ) -> None:
        """`content` is the body's pieces, or a `BodyWriter` that sends them itself."""
        self.source = content
        self.pump: Callable[[Send], Awaitable[None]] | None = getattr(content, "pump", None)  # not isinstance: slow
        super().__init__(_no_body() if self.pump else content, media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[arg-type]
        self.drain = drain
        self.on_close = on_close
        self.error_ending = error_ending

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Plain asyncio tasks, not a task group: a stream's end then costs a few task switches (anyio's cancel scope
        # formats the cancelling task's repr each time, about a tenth of a millisecond per stream).
        outcome = "done"
        try:
            loop = asyncio.get_running_loop()
            pump = loop.create_task(self._pump(send, scope.get(SERVER_SEND)))  # each event resumes only its frames
            gone = loop.create_task(_disconnected(receive))
            expired = self.drain.expired if self.drain is not None else None
            try:
                waits: set[asyncio.Future[Any]] = {pump, gone} if expired is None else {pump, gone, expired}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:  # the request's own task may be cancelled too: nothing outlives it
                pump.cancel()
                gone.cancel()
                await asyncio.wait((pump, gone))
            if not pump.cancelled():
                failure = pump.exception()
                if failure is not None:
                    raise failure  # as if it had run in the request's own task
            elif not gone.cancelled() and gone.exception() is None:
                outcome = "client_stalled" if scope.get(SEND_STALLED) else "client_gone"
            elif expired is not None and expired.done():
                outcome = "shutdown"
            if outcome == "shutdown" and self.drain is not None:
                ending = self.error_ending(self.drain.error())
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": ending, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            try:
                aclose = getattr(self.source, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            finally:
                if self.on_close is not None:
                    self.on_close(outcome)

    async def _pump(self, send: Send, body_send: Send | None) -> None:
        with contextlib.suppress(OSError):  # the client went away while we were writing
            await self.stream_response(send, body_send)

    async def stream_response(self, send: Send, body_send: Send | None = None) -> None:
        """The head through `send` (the middleware chain, which watches heads only), the body through `body_send`
        (the server's own send, when the app put it in the scope): each event then costs one call, not one per
        middleware layer."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body_send = body_send or send
        if self.pump is not None:
            await self.pump(body_send)
        else:
            async for chunk in self.body_iterator:
                await body_send({"type": "http.response.body", "body": chunk, "more_body": True})
        await body_send({"type": "http.response.body", "body": b"", "more_body": False})
