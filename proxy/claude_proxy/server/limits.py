"""What keeps one proxy process bounded: request body size and read timeout, upstream concurrency with a bounded
queue, and the drain that follows SIGTERM.

- `read_body` reads the ASGI body piece by piece and gives up as soon as the limit is passed (or the declared
  `content-length` is over it), so an oversized body is refused without being held; a body not all received within
  `timeout` seconds gets a 408, however it trickles in. What it holds is taken from a `BodyBudget`, the bytes of
  request bodies the whole process may hold at once: a body that does not fit is refused (429, `retry-after`) as
  soon as it does not, and what a request took goes back when it ends (`RequestInfo.release`).
- `Limiter` admits `limit` upstream requests at once; up to `max_queue` more wait (FIFO) at most `timeout` seconds.
  Anything beyond is refused at once with a 429 and `retry-after`, so load turns into quick, retryable refusals
  rather than unbounded memory and latency. A slot is held for the whole upstream exchange, stream included.
- `Drain` is the shutdown state: `begin()` (from the signal handler) makes `/readyz` answer 503 at once and, after
  `grace` seconds, completes `expired`, which ends the streams and waits still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from starlette.types import Receive

from claude_proxy.errors import ProxyError


class BodyTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"


class RequestTimeout(ProxyError):
    status = 408
    type = "invalid_request_error"


class HeadTooLarge(ProxyError):
    status = 431
    type = "invalid_request_error"


class Overloaded(ProxyError):
    status = 429
    type = "rate_limit_error"


class ShuttingDown(ProxyError):
    status = 503
    type = "server_error"


class ClientGone(ProxyError):
    """The client disconnected before the answer was ready (never delivered; 499 as nginx logs it)."""

    status = 499
    type = "client_closed_request"


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"request body is larger than the proxy's limit of {limit} bytes (PROXY_MAX_BODY_BYTES)",
        code="request_too_large",
    )


class BodyBudget:
    """The bytes of request bodies the process holds, over all requests, and their bound. `take` and `give` are
    plain arithmetic on the loop's thread: no lock, no wait."""

    def __init__(self, limit: int, *, on_reject: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.on_reject = on_reject

    def take(self, size: int) -> None:
        """Hold `size` more bytes, or raise Overloaded (nothing taken)."""
        if self.held + size > self.limit:
            if self.on_reject is not None:
                self.on_reject("body_budget")
            raise Overloaded(
                f"the proxy holds {self.limit // (1024 * 1024)} MiB of request bodies already (PROXY_BODY_BUDGET_MB); "
                "retry later",
                code="proxy_overloaded",
                headers={"retry-after": "1"},
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


class BodyHold:
    """What one request took from a `BodyBudget`; `release()` gives it all back, once."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget: BodyBudget | None = budget
        self.size = 0

    def take(self, size: int) -> None:
        assert self._budget is not None
        self._budget.take(size)
        self.size += size

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.give(self.size)


async def read_body(
    receive: Receive, content_length: str | None, limit: int, timeout: float, hold: BodyHold | None = None
) -> bytes:
    """The whole request body, or BodyTooLarge / RequestTimeout / ClientGone / Overloaded without reading past the
    limit. `timeout` bounds the whole read; what is read is taken from `hold` (when given) as it arrives."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ProxyError("invalid content-length header", status=400, type="invalid_request_error") from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone("client disconnected while sending the request")
                body = message.get("body", b"")
                if body:
                    size += len(body)
                    if size > limit:
                        raise _too_large(limit)
                    if hold is not None:
                        hold.take(len(body))
                    chunks.append(body)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s (PROXY_BODY_TIMEOUT)", code="request_timeout"
        ) from None


class Slot:
    """One admitted upstream request; `release()` may be called any number of times, it frees the slot once."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter: Limiter | None = limiter

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release()


class Limiter:
    def __init__(
        self,
        limit: int,
        max_queue: int,
        timeout: float,
        *,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.timeout = timeout
        self.active = 0
        self.on_reject = on_reject
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _refuse(self, reason: str, message: str) -> Overloaded:
        if self.on_reject is not None:
            self.on_reject(reason)
        retry_after = "1" if reason == "queue_full" else str(max(1, round(self.timeout / 2)))
        return Overloaded(message, code="proxy_overloaded", headers={"retry-after": retry_after})

    def try_acquire(self) -> Slot | None:
        """A slot at once if one is free (the common case, with no task or timer), else None."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return Slot(self)
        return None

    async def acquire(self) -> Slot:
        slot = self.try_acquire()
        if slot is not None:
            return slot
        if len(self._waiters) >= self.max_queue:
            raise self._refuse(
                "queue_full",
                f"the proxy is busy: {self.limit} upstream requests running and {self.max_queue} waiting "
                "(PROXY_MAX_CONCURRENCY, PROXY_MAX_QUEUE); retry later",
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._refuse(
                    "queue_timeout",
                    f"the proxy is busy: no upstream slot became free within {self.timeout:g} s "
                    "(PROXY_QUEUE_TIMEOUT); retry later",
                ) from None
            raise
        return Slot(self)  # the releasing request handed its slot over: `active` is unchanged

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


class Drain:
    """Shutdown state shared by the server (which calls `begin`) and the app (which reads it)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.expired: asyncio.Future[None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called in the app's lifespan, on the loop that serves requests."""
        self._loop = loop
        self.expired = loop.create_future()

    def begin(self) -> None:
        """Start draining; safe to call from a signal handler or another thread, and more than once."""
        if self.draining:
            return
        self.draining = True  # /readyz reads this directly: unready at once
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        assert self._loop is not None
        self._loop.call_later(self.grace, self._expire)

    def _expire(self) -> None:
        if self.expired is not None and not self.expired.done():
            self.expired.set_result(None)

    def error(self) -> ShuttingDown:
        return ShuttingDown(
            f"the proxy is shutting down and its grace period of {self.grace:g} s (PROXY_SHUTDOWN_GRACE) ran out; "
            "retry the request",
            code="shutting_down",
            headers={"retry-after": "1"},
        )
