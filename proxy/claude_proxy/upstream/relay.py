"""Streaming relay: Anthropic's event stream in, OpenAI `chat.completion.chunk` lines (or, with the caller's
encoding, Responses events) out, flushed as they come.

Two phases. `start()` opens the upstream stream and reads until there is real output for the client (the role chunk
alone does not count); until then nothing has been sent, so failures are retried (HTTP errors inside the upstream
layer, early `error` events and broken connections here) and, when retries run out, the client gets an ordinary
HTTP error. After that, `pump` relays; a failure becomes one `data: {"error": …}` line and the stream ends
without `[DONE]`, so no client mistakes a truncated answer for a complete one. The upstream response is closed in
every case, including when the client goes away (the task is cancelled and the close is shielded).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
import orjson
from starlette.types import Message

from claude_proxy.errors import ProxyError, UnusableAnswer, UpstreamError
from claude_proxy.retry import RETRYABLE_STATUS, RetryBudget
from claude_proxy.upstream.api import Upstream, retries_spent
from claude_proxy.upstream.client import ReadTimeout, Response, TransportError
from claude_proxy.upstream.sse import DONE, SSEDecoder, encode_data

log = logging.getLogger("claude_proxy.relay")
_SLICE = 4096  # bytes decoded at a time while looking for the next single event


def encode_chunks(chunks: list[dict[str, Any]]) -> bytes:
    if len(chunks) == 1:  # most network reads carry one event, which makes one chunk
        return b"data: " + orjson.dumps(chunks[0]) + b"\n\n"
    return b"".join([b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks])


def error_line(exc: ProxyError) -> bytes:
    return encode_data(orjson.dumps(exc.envelope()))


class Translator(Protocol):
    """A stream translator (chat chunks or Responses events): Anthropic events in, output events out.

    `start()` takes the second output event as proof of real output (chat's role chunk alone is not), so a
    translator must not release two events before the answer has begun: the Responses one holds its lifecycle
    events back until the first delta."""

    @property
    def usage(self) -> Mapping[str, Any]: ...

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


def _chat_failure(translator: Any, exc: ProxyError) -> bytes:
    return error_line(exc)


def _stream_failure(exc: BaseException, idle_timeout: float | None) -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, ReadTimeout):
        wait = f" for {idle_timeout:g} s" if idle_timeout else ""
        return UpstreamError(
            f"Anthropic stream stalled: no data{wait}", status=504, type="timeout_error", upstream_type="timeout"
        )
    if isinstance(exc, TransportError):
        return UnusableAnswer(f"connection to Anthropic lost mid-stream ({type(exc).__name__})")
    raise exc


def _parse(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Invalid UTF-8 reads as U+FFFD, as an event-stream decoder reads it; anything else is malformed.
        try:
            value = orjson.loads(data.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raise UnusableAnswer("Anthropic sent a malformed stream event") from None
    if not isinstance(value, dict):
        raise UnusableAnswer("Anthropic sent a malformed stream event")
    return value


class _Events:
    """Anthropic's stream events as they arrive, for `StreamRelay.start`: handed out one at a time (`next`).

    A network read often holds many events. `next` decodes only a slice of it at a time, so the first event is
    available without decoding the rest; what is left (`take`) the relay then handles with everything that follows,
    one network read at a time: one write to the client per read, never one per event (a write is a system call:
    per event, they cost more than the rest of the relay together). Nothing that has arrived ever waits for more to
    arrive.
    """

    def __init__(self, response: Response) -> None:
        self.read = response.next_chunk
        self.decoder = SSEDecoder()
        self._pending: collections.deque[bytes] = collections.deque()
        self._rest = b""
        self.ended = False

    def decode(self, data: bytes) -> list[bytes]:
        """The data of the (non-ping) events `data` completes."""
        return self.decoder.feed_data(data, b"ping")

    async def next(self) -> dict[str, Any] | None:
        """The next event, reading the network only when nothing is pending; None at the end of the stream."""
        while not self._pending:
            if self._rest:
                data, self._rest = self._rest[:_SLICE], self._rest[_SLICE:]
                self._pending.extend(self.decode(data))
                continue
            if self.ended:
                return None
            self._rest = await self.read()
            if not self._rest:
                self.ended = True
                self.decoder.flush()
        return _parse(self._pending.popleft())

    def take(self) -> list[bytes]:
        """Every event already received and not yet handed out (decoding what is left of the last read)."""
        out = list(self._pending)
        self._pending.clear()
        if self._rest:
            out += self.decode(self._rest)
            self._rest = b""
        return out


class StreamRelay:
    def __init__(
        self,
        upstream: Upstream,
        body: bytes,
        client_betas: str | None,
        new_translator: Callable[[], Translator],
        idle_timeout: float | None = None,
        *,
        encode: Callable[[list[dict[str, Any]]], bytes] = encode_chunks,
        done: bytes = DONE,
        failure: Callable[[Any, ProxyError], bytes] = _chat_failure,
    ) -> None:
        """`encode`, `done` and `failure` (the bytes ending a stream cut by an error, given the translator) default
        to chat completions' chunk lines, `[DONE]` and the error line."""
        self.upstream = upstream
        self.body = body
        self.client_betas = client_betas
        self.new_translator = new_translator
        self.idle_timeout = idle_timeout
        self.encode, self.done, self.failure = encode, done, failure
        self.response: Response | None = None
        self.translator: Translator | None = None
        self._events: _Events | None = None
        self._first: list[dict[str, Any]] = []
        self._ended = False  # the upstream stream ended during start()
        self.finished = False  # the stream ran to [DONE]
        self.error: ProxyError | None = None  # what ended the stream with an error line
        self._closed = False

    async def start(self) -> None:
        """Open the stream and read up to the first output; raises ProxyError while nothing was sent."""
        budget = RetryBudget()  # shared with the upstream layer: 1 + max_retries attempts in all
        while True:
            response = await self.upstream.open_stream(self.body, self.client_betas, budget)
            translator = self.new_translator()
            events = _Events(response)
            chunks: list[dict[str, Any]] = []
            ended = False
            try:
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise UnusableAnswer(
                        f"Anthropic API answered {response.status_code} with {content_type.split(';')[0] or 'no'} "
                        "content instead of an event stream (a proxy or gateway in between?)",
                        code="not_an_event_stream",
                    )
                while len(chunks) < 2:
                    event = await events.next()
                    if event is None:
                        chunks += translator.finish()
                        ended = True
                        break
                    chunks += translator.feed(event)
            except (ProxyError, TransportError) as exc:
                await self._close(events, response)
                error = _stream_failure(exc, self.idle_timeout)
                if error.status in RETRYABLE_STATUS:
                    if await self.upstream.backoff(
                        budget.retries + 1, None, budget, f"stream failed early ({error.type})", "stream_error"
                    ):
                        continue
                    if budget.retries:
                        retries_spent(error)
                raise error from None
            except BaseException:
                await self._close(events, response)
                raise
            self.response, self.translator, self._events, self._first = response, translator, events, chunks
            self._ended = ended
            return

    @staticmethod
    async def _close(events: _Events, response: Response) -> None:
        with anyio.CancelScope(shield=True):
            await response.close()

    async def aclose(self) -> None:
        """Close the upstream stream, whether or not `pump` ran (the client may leave before it starts)."""
        if self.response is not None and self._events is not None and not self._closed:
            self._closed = True
            await self._close(self._events, self.response)

    async def pump(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Relay the opened stream to the client as ASGI body messages (`more_body` always true: the caller ends
        the response), one per network read: its events translated together and sent at once. One coroutine frame
        per read, nothing stacked on it (each layer of async iteration costs a resumption per event)."""
        assert self.response is not None and self.translator is not None and self._events is not None
        translator, events = self.translator, self._events
        feed, encode = translator.feed, self.encode
        # Chat chunks only: a translator that can splice a plain text delta's chunk (most of a stream) does so.
        spliced = getattr(translator, "text_delta_json", None) if encode is encode_chunks else None
        try:
            if self._first:
                await send({"type": "http.response.body", "body": encode(self._first), "more_body": True})
            if not self._ended:
                batch, read = events.take(), events.read
                while True:
                    if len(batch) == 1 and spliced is not None and (chunk := spliced(batch[0])) is not None:
                        await send(
                            {"type": "http.response.body", "body": b"data: " + chunk + b"\n\n", "more_body": True}
                        )
                    elif batch:
                        chunks: list[dict[str, Any]] = []
                        try:
                            for data in batch:
                                chunks += feed(_parse(data))
                        except ProxyError:
                            if chunks:  # what came before the failure is still the client's
                                await send({"type": "http.response.body", "body": encode(chunks), "more_body": True})
                            raise
                        if chunks:
                            await send({"type": "http.response.body", "body": encode(chunks), "more_body": True})
                    data = await read()
                    if not data:
                        events.decoder.flush()
                        break
                    batch = events.decode(data)
                tail = translator.finish()
                if tail:
                    await send({"type": "http.response.body", "body": encode(tail) + self.done, "more_body": True})
                    self.finished = True
                    return
            if self.done:
                await send({"type": "http.response.body", "body": self.done, "more_body": True})
            self.finished = True
        except (ProxyError, TransportError) as exc:
            error = _stream_failure(exc, self.idle_timeout)
            self.error = error
            log.warning("stream ended with an error after output began: %s", error.type)
            await send({"type": "http.response.body", "body": self.failure(translator, error), "more_body": True})
        finally:
            await self.aclose()
