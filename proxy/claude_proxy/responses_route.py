"""POST /v1/responses: OpenAI's Responses API over the same machinery as chat completions.

The request is translated by `responses` (which goes through the chat translation), sent with the same upstream
calls (`Upstream.create_message`, `StreamRelay` over `Upstream.open_stream`: one retry budget, the same error
mapping), under the same concurrency limit, disconnect watch and shutdown drain, and recorded on the same access line
and metrics. Only the shapes differ: a Response object, or the Responses event stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from claude_proxy.access import RequestInfo
from claude_proxy.app import (
    SSEResponse,
    _validation_error,
    answering_errors,
    read_json_object,
    send_json,
    until_disconnect,
)
from claude_proxy.convert.request import Options
from claude_proxy.convert.responses import ResponsesRequest, ResponsesTranslation, to_anthropic_request, to_response
from claude_proxy.convert.responses_stream import ResponsesStreamTranslator, encode_events
from claude_proxy.limits import Slot
from claude_proxy.relay import StreamRelay
from claude_proxy.upstream import Upstream

Endpoint = Callable[[Scope, Receive, Send], Any]


def responses_endpoint(
    app: FastAPI, check_key: Callable[[bytes | str | None], None], options: Options, clock: Callable[[], float]
) -> Endpoint:
    """The plain ASGI app serving POST /v1/responses for `app` (its settings, limiter, drain and metrics)."""
    settings = app.state.settings
    limiter = app.state.limiter
    drain = app.state.drain
    metrics = app.state.metrics

    async def serve(scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> None:
        payload, betas = await read_json_object(scope, receive, settings, check_key)
        try:
            request = ResponsesRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        translated = to_anthropic_request(request, options)
        translation = translated.translation
        info.model, info.stream = translation.model, bool(request.stream)
        upstream: Upstream = app.state.upstream
        created = int(clock())
        started = time.perf_counter()
        slot = limiter.try_acquire()
        if slot is None:
            slot = await until_disconnect(receive, limiter.acquire, drain)
        if request.stream:
            response = await stream(receive, info, translated, upstream, betas, created, started, slot)
            await response(scope, receive, send)
            return
        try:
            message, headers = await until_disconnect(
                receive, lambda: upstream.create_message(translation.body, betas), drain
            )
        finally:
            slot.release()
        request_id = headers.get("request-id")
        info.upstream_request_id = request_id
        usage = message.get("usage")
        if isinstance(usage, dict):
            info.add_usage(usage)
            metrics.usage(translation.model, usage)
        body = to_response(
            message, model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
        )
        await send_json(send, body, headers={"x-upstream-request-id": request_id} if request_id else None)

    async def stream(
        receive: Receive,
        info: RequestInfo,
        translated: ResponsesTranslation,
        upstream: Upstream,
        betas: str | None,
        created: int,
        started: float,
        slot: Slot,
    ) -> Response:
        translation = translated.translation
        try:
            relay = StreamRelay(
                upstream,
                orjson.dumps({**translation.body, "stream": True}),
                betas,
                lambda: ResponsesStreamTranslator(
                    model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
                ),
                idle_timeout=settings.stream_idle_timeout,
                encode=encode_events,
                done=b"",
                failure=lambda translator, error: encode_events(translator.fail(error)),
            )
            await until_disconnect(receive, relay.start, drain)
        except BaseException:
            slot.release()
            raise
        metrics.ttft.observe(time.perf_counter() - started)
        if relay.response is not None:
            info.upstream_request_id = relay.response.headers.get("request-id")

        def on_close(outcome: str) -> None:
            slot.release()
            if relay.translator is not None:
                info.add_usage(relay.translator.usage)
                metrics.usage(translation.model, relay.translator.usage)
            if relay.error is not None:
                metrics.stream_errors.labels(relay.error.type).inc()
                info.error = relay.error.code or relay.error.type
            elif outcome == "shutdown":
                metrics.stream_errors.labels("shutting_down").inc()
                info.error = "shutting_down"
            elif outcome == "client_gone" and not relay.finished:
                metrics.disconnects.inc()
                info.error = "client_disconnected"

        return SSEResponse(relay.__aiter__(), drain=drain, on_close=on_close)

    return answering_errors(serve)
