"""The stream relay: Anthropic's event stream in, the client's stream out, flushed as it comes. One relay serves chat
completions, the Responses API and `/v1/messages`; what differs between them is a `Shape` the route gives.

Two phases. `start()` opens the upstream stream and reads until there is real output for the client; until then
nothing has been sent, so failures are retried in the upstream layer's one retry loop (this relay's `_begin` is its
`opened` hook, raising `Retry` for an early `error` event or a broken connection) and, when retries run out, the
client gets an ordinary HTTP error. After that, `pump` relays, one write per network read; a failure ends the stream
in the shape's own way (`Shape.fail`: chat's error line, the Responses API's `response.failed`, Anthropic's `error`
event), never with the shape's normal end, so no client mistakes a truncated answer for a complete one. The upstream
response is closed in every case, including when the client goes away (the task is cancelled and the close is
shielded).

A translating shape (chat completions, Responses) parses each event, feeds it to its translator and encodes what comes
out; a translator that declares a fast path (`Translator.fast_path`) writes a read's one event itself when it can
(`convert.fastpath`: a plain text delta, spliced). A passthrough shape (`/v1/messages`) sends Anthropic's bytes as
they came, its translator only watching the events go by (the usage, for the access log and the metrics); a stream
whose first event is an `error` of a retryable type is retried, and out of retries goes to the client as it is, as
does Anthropic's own HTTP error answer (`refused`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import anyio
import orjson
from yarl import URL

from claude_proxy.convert.chat_stream import encode_chunks
from claude_proxy.convert.errors import upstream_error
from claude_proxy.convert.tables import ERROR_TYPES
from claude_proxy.errors import ProxyError, UnusableAnswer, UpstreamError
from claude_proxy.retry import RETRYABLE_STATUS, RetryBudget
from claude_proxy.upstream.api import Retry, Upstream
from claude_proxy.upstream.client import ReadTimeout, Response, TransportError
from claude_proxy.upstream.sse import DONE, SSEDecoder, encode_data

log = logging.getLogger("claude_proxy.relay")
_SLICE = 4096  # bytes of a read decoded at a time before the first output


def error_line(exc: ProxyError) -> bytes:
    """A chat completions stream's end after a failure: one `data:` event with OpenAI's error envelope."""
    return encode_data(orjson.dumps(exc.envelope()))


class Translator(Protocol):
    """A stream translator (chat chunks, Responses events, or the passthrough's watcher): Anthropic events in,
    output events out.

    `start()` takes the second output event as proof of real output (chat's role chunk alone is not), so a
    translator must not release two events before the answer has begun: the Responses one holds its lifecycle
    events back until the first delta."""

    @property
    def usage(self) -> Mapping[str, Any]: ...

    @property
    def fast_path(self) -> Callable[[bytes], bytes | None] | None:
        """An optional capability: an event's raw JSON -> the bytes the general path (parse, `feed`, encode) writes
        for it, or None to take the general path. None when the translator has no fast path."""

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


def _error_line(translator: Translator, exc: ProxyError) -> bytes:
    return error_line(exc)


T = TypeVar("T", bound=Translator)


@dataclass(frozen=True, slots=True)
class Shape(Generic[T]):
    """How a relayed stream looks to its client, given by the route: a fresh `translator` per attempt, how its
    output is written (`encode`), what ends a complete stream (`done`) and what ends one cut by an error (`fail`,
    given the translator). The defaults are chat completions'. With `passthrough`, Anthropic's bytes go out
    unchanged (the translator only watches), and its error answers are the client's, as they are."""

    translator: Callable[[], T]
    encode: Callable[[list[dict[str, Any]]], bytes] = encode_chunks
    done: bytes = DONE
    fail: Callable[[T, ProxyError], bytes] = _error_line
    passthrough: bool = False


def _stream_failure(exc: BaseException, idle_timeout: float | None, where: str = "mid-stream") -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, ReadTimeout):
        wait = f" for {idle_timeout:g} s" if idle_timeout else ""
        return UpstreamError(
            f"Anthropic stream stalled: no data{wait}", status=504, type="timeout_error", upstream_type="timeout_error"
        )
    if isinstance(exc, TransportError):
        return UnusableAnswer(f"connection to Anthropic lost {where} ({type(exc).__name__})")
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


def _retryable_error(event: Mapping[str, Any]) -> int | None:
    """The HTTP status an `error` event stands for when its type is a retryable one (an unknown type is not)."""
    if event.get("type") != "error":
        return None
    error = event.get("error")
    etype = error.get("type") if isinstance(error, Mapping) else None
    kind = ERROR_TYPES.get(etype) if isinstance(etype, str) else None
    return kind.status if kind is not None and kind.status in RETRYABLE_STATUS else None


# What the data of a message_start or message_delta event holds, and a text delta's never does (unless its text
# says it, which costs only a parse): a passed-through stream's deltas go by unparsed.
_USAGE_MARK = b'"message_'


def _watch(feed: Callable[[Mapping[str, Any]], object], batch: Sequence[bytes]) -> dict[str, Any] | None:
    """Show a passthrough's translator the events of `batch` (a malformed one is the client's to judge, not the
    relay's); the first of them, parsed, when it could be."""
    first = None
    for at, data in enumerate(batch):
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            feed(event)
            if at == 0:
                first = event
    return first


class StreamRelay:
    def __init__(
        self,
        upstream: Upstream,
        body: bytes,
        client_betas: str | None,
        shape: Shape[Any],
        idle_timeout: float | None = None,
        *,
        url: URL | None = None,
        version: str | None = None,
    ) -> None:
        """A stream of `body` posted to `url` (/v1/messages by default; `version` replaces the anthropic-version)."""
        self.upstream = upstream
        self.body = body
        self.client_betas = client_betas
        self.shape = shape
        self.idle_timeout = idle_timeout
        self.url, self.version = url, version
        self.budget = RetryBudget()  # shared with the upstream layer: 1 + max_retries attempts in all
        self.response: Response | None = None
        self.translator: Translator | None = None
        self._decoder: SSEDecoder | None = None  # one per attempt, made by start()
        self._head: list[bytes] = []  # the output read by start(), sent first
        self._pending: list[bytes] = []  # events start() decoded and did not translate
        self._rest = b""  # what start() read and did not decode
        self._ended = False  # the upstream stream ended during start()
        self.finished = False  # the stream ran to its normal end
        self.error: ProxyError | None = None  # what ended the stream with the shape's failure
        self._closed = False

    @property
    def refused(self) -> bool:
        """The stream did not open: Anthropic's own error answer (read, closed) is the client's (passthrough only)."""
        return self.response is not None and self.response.status_code >= 400

    async def start(self) -> None:
        """Open the stream and read up to the first output; raises ProxyError while nothing was sent."""
        self.response = await self.upstream.send_with_retries(
            self.body,
            self.client_betas,
            stream=True,
            budget=self.budget,
            url=self.url,
            version=self.version,
            relay_errors=self.shape.passthrough,
            opened=self._begin,
        )

    async def _begin(self, response: Response) -> None:
        """Read an opened stream up to its first output (the retry loop's `opened` hook): raises `Retry` for a
        failure another attempt may not meet, while nothing has been sent."""
        shape = self.shape
        translator = self.translator = shape.translator()
        decoder = self._decoder = SSEDecoder()
        head: list[bytes] = []
        self._head, self._pending, self._rest, self._ended = head, [], b"", False
        read = response.next_chunk
        try:
            if shape.passthrough:
                while True:  # to the first event: Anthropic's bytes so far are the output
                    data = await read()
                    if not data:
                        self._ended = True
                        return
                    head.append(data)
                    batch = decoder.feed_data(data, b"ping")
                    if batch:
                        first = _watch(translator.feed, batch)
                        status = _retryable_error(first) if first is not None else None
                        if status is not None:
                            why = f"stream began with an error (HTTP {status} kind)"
                            raise Retry(upstream_error(status, first, None), why, "stream_error", answer=response)
                        return
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise UnusableAnswer(
                    f"Anthropic API answered {response.status_code} with {content_type.split(';')[0] or 'no'} "
                    "content instead of an event stream (a proxy or gateway in between?)",
                    code="not_an_event_stream",
                )
            chunks: list[dict[str, Any]] = []
            data = b""
            while len(chunks) < 2:
                if not data:
                    data = await read()
                    if not data:
                        chunks += translator.finish()
                        self._ended = True
                        break
                # A slice at a time: the first output goes out without decoding all of a long read first.
                batch = decoder.feed_data(data[:_SLICE], b"ping")
                data = data[_SLICE:]
                for at, event in enumerate(batch):
                    chunks += translator.feed(_parse(event))
                    if len(chunks) >= 2:
                        self._pending = batch[at + 1 :]
                        break
            self._rest = data
            if chunks:
                head.append(shape.encode(chunks))
        except (ProxyError, TransportError) as exc:
            error = _stream_failure(exc, self.idle_timeout, "before the stream began")
            if error.status in RETRYABLE_STATUS:
                raise Retry(error, f"stream failed early ({error.type})", "stream_error") from None
            raise error from None

    async def aclose(self) -> None:
        """Close the upstream stream, whether or not `pump` ran (the client may leave before it starts)."""
        if self.response is not None and not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self.response.close()

    async def pump(self, send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        """Relay the opened stream to the client as ASGI body messages (`more_body` always true: the caller ends
        the response), one per network read: its events translated together and sent at once (or, passed through,
        the read itself). One coroutine frame per read, nothing stacked on it (each layer of async iteration costs a
        resumption per event)."""
        assert self.response is not None and self.translator is not None and self._decoder is not None
        shape, translator = self.shape, self.translator
        feed, encode, passthrough = translator.feed, shape.encode, shape.passthrough
        fast = translator.fast_path
        try:
            if self._head:
                body = self._head[0] if len(self._head) == 1 else b"".join(self._head)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not self._ended:
                decoder, read = self._decoder, self.response.next_chunk
                batch, data = self._pending, b""
                if self._rest:
                    batch = batch + decoder.feed_data(self._rest, b"ping")
                while True:
                    if passthrough:
                        for event in batch:
                            if _USAGE_MARK in event:  # only message_start and message_delta carry usage
                                _watch(feed, (event,))
                        if data:
                            await send({"type": "http.response.body", "body": data, "more_body": True})
                    elif len(batch) == 1 and fast is not None and (line := fast(batch[0])) is not None:
                        await send({"type": "http.response.body", "body": line, "more_body": True})
                    elif batch:
                        chunks: list[dict[str, Any]] = []
                        try:
                            for event in batch:
                                chunks += feed(_parse(event))
                        except ProxyError:
                            if chunks:  # what came before the failure is still the client's
                                await send({"type": "http.response.body", "body": encode(chunks), "more_body": True})
                            raise
                        if chunks:
                            await send({"type": "http.response.body", "body": encode(chunks), "more_body": True})
                    data = await read()
                    if not data:
                        decoder.flush()
                        break
                    batch = decoder.feed_data(data, b"ping")
                tail = translator.finish()
                if tail:
                    body = encode(tail) + shape.done
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self.finished = True
                    return
            if shape.done:
                await send({"type": "http.response.body", "body": shape.done, "more_body": True})
            self.finished = True
        except (ProxyError, TransportError) as exc:
            error = _stream_failure(exc, self.idle_timeout)
            self.error = error
            log.warning("stream ended with an error after output began: %s", error.type)
            await send({"type": "http.response.body", "body": shape.fail(translator, error), "more_body": True})
        finally:
            await self.aclose()
