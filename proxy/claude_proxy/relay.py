"""Streaming relay: Anthropic's event stream in, OpenAI `chat.completion.chunk` lines out, flushed as they come.

Two phases. `start()` opens the upstream stream and reads until there is real output for the client (the role chunk
alone does not count); until then nothing has been sent, so failures are retried (HTTP errors inside the upstream
layer, early `error` events and broken connections here) and, when retries run out, the client gets an ordinary
HTTP error. After that, `__aiter__` relays; a failure becomes one `data: {"error": …}` line and the stream ends
without `[DONE]`, so no client mistakes a truncated answer for a complete one. The upstream response is closed in
every case, including when the client goes away (the task is cancelled and the close is shielded).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import orjson

from claude_proxy.errors import ProxyError, UpstreamError
from claude_proxy.sse import DONE, SSEDecoder, encode_data
from claude_proxy.stream import StreamTranslator
from claude_proxy.upstream import RETRYABLE_STATUS, RetryBudget, Upstream, retries_spent

log = logging.getLogger("claude_proxy.relay")


def encode_chunks(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(encode_data(orjson.dumps(chunk)) for chunk in chunks)


def error_line(exc: ProxyError) -> bytes:
    return encode_data(orjson.dumps(exc.envelope()))


def _stream_failure(exc: BaseException, idle_timeout: float | None) -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, httpx.ReadTimeout):
        wait = f" for {idle_timeout:g} s" if idle_timeout else ""
        return UpstreamError(
            f"Anthropic stream stalled: no data{wait}", status=504, type="timeout_error", upstream_type="timeout"
        )
    if isinstance(exc, httpx.TransportError):
        return UpstreamError(
            f"connection to Anthropic lost mid-stream ({type(exc).__name__})", status=502, type="upstream_error"
        )
    raise exc


class StreamRelay:
    def __init__(
        self,
        upstream: Upstream,
        body: bytes,
        client_betas: str | None,
        new_translator: Callable[[], StreamTranslator],
        idle_timeout: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.body = body
        self.client_betas = client_betas
        self.new_translator = new_translator
        self.idle_timeout = idle_timeout
        self.response: httpx.Response | None = None
        self.translator: StreamTranslator | None = None
        self._events: AsyncIterator[dict[str, Any]] | None = None
        self._first: list[dict[str, Any]] = []
        self._ended = False  # the upstream stream ended during start()
        self.finished = False  # the stream ran to [DONE]
        self.error: ProxyError | None = None  # what ended the stream with an error line

    async def _read_events(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        decoder = SSEDecoder()
        async for raw in response.aiter_raw():
            for event in decoder.feed(raw):
                if event.event == "ping":
                    continue
                yield self._parse(event.data)
        for event in decoder.flush():
            if event.event != "ping":
                yield self._parse(event.data)

    @staticmethod
    def _parse(data: str) -> dict[str, Any]:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError("Anthropic sent a malformed stream event", status=502, type="upstream_error") from None
        if not isinstance(value, dict):
            raise UpstreamError("Anthropic sent a malformed stream event", status=502, type="upstream_error")
        return value

    async def start(self) -> None:
        """Open the stream and read up to the first output; raises ProxyError while nothing was sent."""
        budget = RetryBudget()  # shared with the upstream layer: 1 + max_retries attempts in all
        while True:
            response = await self.upstream.open_stream(self.body, self.client_betas, budget)
            translator = self.new_translator()
            events = self._read_events(response)
            chunks: list[dict[str, Any]] = []
            ended = False
            try:
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise UpstreamError(
                        f"Anthropic API answered {response.status_code} with {content_type.split(';')[0] or 'no'} "
                        "content instead of an event stream (a proxy or gateway in between?)",
                        status=502,
                        type="upstream_error",
                        code="not_an_event_stream",
                    )
                while len(chunks) < 2:
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        chunks += translator.finish()
                        ended = True
                        break
                    chunks += translator.feed(event)
            except (ProxyError, httpx.TransportError) as exc:
                await self._close(events, response)
                error = _stream_failure(exc, self.idle_timeout)
                if error.status in RETRYABLE_STATUS:
                    slept = await self.upstream.backoff(
                        budget.retries + 1, None, budget.waited, f"stream failed early ({error.type})", "stream_error"
                    )
                    if slept is not None:
                        budget.waited += slept
                        budget.retries += 1
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
    async def _close(events: AsyncIterator[dict[str, Any]], response: httpx.Response) -> None:
        with anyio.CancelScope(shield=True):
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            await response.aclose()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self.response is not None and self.translator is not None and self._events is not None
        response, translator, events = self.response, self.translator, self._events
        try:
            if self._first:
                yield encode_chunks(self._first)
            if not self._ended:
                async for event in events:
                    chunks = translator.feed(event)
                    if chunks:
                        yield encode_chunks(chunks)
                tail = translator.finish()
                if tail:
                    yield encode_chunks(tail)
            yield DONE
            self.finished = True
        except (ProxyError, httpx.TransportError) as exc:
            error = _stream_failure(exc, self.idle_timeout)
            self.error = error
            log.warning("stream ended with an error after output began: %s", error.type)
            yield error_line(error)
        finally:
            await self._close(events, response)
