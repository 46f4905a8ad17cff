"""POST /v1/chat/completions: the body checked and translated, then one upstream exchange, answered whole or streamed.

`complete` sends one Messages request and answers the translated completion; `stream` relays Anthropic's event
stream as `chat.completion.chunk` lines (`StreamRelay`). Both hold an `UpstreamSlot`, which holds the concurrency
slot (a stream's until it ends) and records the usage; errors raised before the answer began become OpenAI's
envelope in the app's one error handler.
"""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.convert.request import Translation, to_anthropic
from claude_proxy.convert.response import to_openai
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.server.body import JsonBody
from claude_proxy.server.inbound import RequestHeaders, openai_key, request_headers
from claude_proxy.server.render import json_response
from claude_proxy.server.routing import STREAMABLE, ProxyRoute
from claude_proxy.server.state import AppState, UpstreamSlot, app_state, relay_stream, request_info
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.relay import Shape, StreamRelay

router = APIRouter(route_class=ProxyRoute, dependencies=[Depends(openai_key)])


@router.post(
    "/v1/chat/completions",
    summary="Chat Completions",
    description="OpenAI's chat completion, answered by Claude.",
    responses=STREAMABLE,
)
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(
    request: Request,
    headers: Annotated[RequestHeaders, Depends(request_headers)],
    chat: Annotated[ChatRequest, Depends(JsonBody(ChatRequest))],
) -> Response:
    state, info = app_state(request), request_info(request)
    translation = to_anthropic(chat, state.options)
    info.model, info.stream = translation.model, bool(chat.stream)
    created = int(state.clock())
    started = time.perf_counter()
    betas = headers.first_beta
    async with UpstreamSlot(state, request.receive, info) as slot:
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return await stream(request, state, slot, translation, betas, created, started, include_usage)
        return await complete(request, state, slot, translation, betas, created)


async def complete(
    request: Request,
    state: AppState,
    slot: UpstreamSlot,
    translation: Translation,
    betas: str | None,
    created: int,
) -> Response:
    """One Messages request, answered as one `chat.completion`."""
    upstream = state.upstream
    message, headers = await until_disconnect(
        request.receive, lambda: upstream.create_message(translation.body, betas), state.drain
    )
    request_id = headers.get("request-id")
    slot.info.upstream_request_id = request_id
    slot.answered(message)
    body = to_openai(message, model=translation.model, created=created, json_tool=translation.json_tool)
    return json_response(body, headers={"x-upstream-request-id": request_id} if request_id else None)


async def stream(
    request: Request,
    state: AppState,
    slot: UpstreamSlot,
    translation: Translation,
    betas: str | None,
    created: int,
    started: float,
    include_usage: bool,
) -> Response:
    """Anthropic's event stream relayed as `chat.completion.chunk` server-sent events."""
    relay = StreamRelay(
        state.upstream,
        orjson.dumps({**translation.body, "stream": True}),
        betas,
        Shape(
            lambda: StreamTranslator(
                model=translation.model, created=created, include_usage=include_usage, json_tool=translation.json_tool
            )
        ),
        idle_timeout=state.settings.stream_idle_timeout,
    )
    response = await relay_stream(request.receive, state, slot, relay, started)
    assert response is not None  # only a passthrough relay opens onto an error answer it leaves to its caller
    return response
