"""POST /v1/chat/completions: the body checked and translated, then one upstream turn, answered whole or streamed.

The hot path, served as a plain ASGI handler (no Request or Response objects on the way in). `complete` sends one
Messages request and answers the translated completion; `stream` relays Anthropic's event stream as
`chat.completion.chunk` lines (`StreamRelay`). Both run inside a `Turn`, which holds the concurrency slot and records
the usage; errors raised before the answer began become OpenAI's envelope in the app's one error handler.
"""

from __future__ import annotations

import time

import orjson
from starlette.types import Receive, Scope, Send

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.convert.request import Translation, to_anthropic
from claude_proxy.convert.response import to_openai
from claude_proxy.convert.wire import ChatRequest
from claude_proxy.server.body import parse, read_json_object
from claude_proxy.server.render import send_json
from claude_proxy.server.state import Edge, Turn, edge_of, info_of, relay_stream
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.relay import Shape, StreamRelay


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    """Chat Completions: OpenAI's chat completion, answered by Claude."""
    edge, info = edge_of(scope), info_of(scope)
    payload, betas = await read_json_object(scope, receive, edge)
    chat = parse(ChatRequest, payload)
    translation = to_anthropic(chat, edge.options)
    info.model, info.stream = translation.model, bool(chat.stream)
    created = int(edge.clock())
    started = time.perf_counter()
    async with Turn(edge, receive, info) as turn:
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            await stream(scope, receive, send, edge, turn, translation, betas, created, started, include_usage)
        else:
            await complete(receive, send, edge, turn, translation, betas, created)


async def complete(
    receive: Receive, send: Send, edge: Edge, turn: Turn, translation: Translation, betas: str | None, created: int
) -> None:
    """One Messages request, answered as one `chat.completion`."""
    upstream = edge.upstream
    message, headers = await until_disconnect(
        receive, lambda: upstream.create_message(translation.body, betas), edge.drain
    )
    request_id = headers.get("request-id")
    turn.info.upstream_request_id = request_id
    turn.usage = message.get("usage")
    body = to_openai(message, model=translation.model, created=created, json_tool=translation.json_tool)
    await send_json(send, body, headers={"x-upstream-request-id": request_id} if request_id else None)


async def stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    edge: Edge,
    turn: Turn,
    translation: Translation,
    betas: str | None,
    created: int,
    started: float,
    include_usage: bool,
) -> None:
    """Anthropic's event stream relayed as `chat.completion.chunk` server-sent events."""
    relay = StreamRelay(
        edge.upstream,
        orjson.dumps({**translation.body, "stream": True}),
        betas,
        Shape(
            lambda: StreamTranslator(
                model=translation.model, created=created, include_usage=include_usage, json_tool=translation.json_tool
            )
        ),
        idle_timeout=edge.settings.stream_idle_timeout,
    )
    await relay_stream(scope, receive, send, edge, turn, relay, started)
