"""POST /v1/responses: OpenAI's Responses API over the same machinery as chat completions.

The request is translated by `convert.responses` (which goes through the chat translation), sent with the same
upstream calls (`Upstream.create_message`, `StreamRelay` over `Upstream.open_stream`: one retry budget, the same error
mapping), in the same `Turn` (concurrency limit, usage), under the same disconnect watch and shutdown drain, and
recorded on the same access line and metrics. Only the shapes differ: a Response object, or the Responses event
stream.
"""

from __future__ import annotations

import time

import orjson
from starlette.types import Receive, Scope, Send

from claude_proxy.convert.responses import ResponsesRequest, ResponsesTranslation, to_anthropic_request, to_response
from claude_proxy.convert.responses_stream import ResponsesStreamTranslator, encode_events
from claude_proxy.edge import (
    Edge,
    Turn,
    edge_of,
    info_of,
    parse,
    read_json_object,
    relay_stream,
    send_json,
    until_disconnect,
)
from claude_proxy.relay import StreamRelay


async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Responses: OpenAI's Responses API, stateless (send the whole conversation in `input`), answered by Claude."""
    edge, info = edge_of(scope), info_of(scope)
    payload, betas = await read_json_object(scope, receive, edge)
    request = parse(ResponsesRequest, payload)
    translated = to_anthropic_request(request, edge.options)
    info.model, info.stream = translated.translation.model, bool(request.stream)
    created = int(edge.clock())
    started = time.perf_counter()
    async with Turn(edge, receive, info) as turn:
        if request.stream:
            await stream(scope, receive, send, edge, turn, translated, betas, created, started)
        else:
            await complete(receive, send, edge, turn, translated, betas, created)


async def complete(
    receive: Receive,
    send: Send,
    edge: Edge,
    turn: Turn,
    translated: ResponsesTranslation,
    betas: str | None,
    created: int,
) -> None:
    """One Messages request, answered as one Response object."""
    translation, upstream = translated.translation, edge.upstream
    message, headers = await until_disconnect(
        receive, lambda: upstream.create_message(translation.body, betas), edge.drain
    )
    request_id = headers.get("request-id")
    turn.info.upstream_request_id = request_id
    turn.usage = message.get("usage")
    body = to_response(
        message, model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
    )
    await send_json(send, body, headers={"x-upstream-request-id": request_id} if request_id else None)


async def stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: Edge,
    turn: Turn,
    translated: ResponsesTranslation,
    betas: str | None,
    created: int,
    started: float,
) -> None:
    """Anthropic's event stream relayed as the Responses event stream (`response.created` … `response.completed`)."""
    translation = translated.translation
    relay = StreamRelay(
        edge.upstream,
        orjson.dumps({**translation.body, "stream": True}),
        betas,
        lambda: ResponsesStreamTranslator(
            model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
        ),
        idle_timeout=edge.settings.stream_idle_timeout,
        encode=encode_events,
        done=b"",
        failure=lambda translator, error: encode_events(translator.fail(error)),
    )
    await relay_stream(scope, receive, send, edge, turn, relay, started)
