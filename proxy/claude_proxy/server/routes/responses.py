"""POST /v1/responses: OpenAI's Responses API over the same machinery as chat completions.

The request is translated by `convert.responses` (which goes through the chat translation), sent with the same
upstream calls (`Upstream.create_message`, `StreamRelay`: one retry loop and budget, the same error mapping), in the
same `Turn` (concurrency limit, usage), under the same disconnect watch and shutdown drain, and recorded on the same
access line and metrics. Only the shapes differ: a Response object, or the Responses event
stream.

Unless the request says `store: false`, the Response's output items go into the edge's `ItemStore` before the
client can see them (the whole answer before it is sent; a stream's items with its `response.completed` or
`response.incomplete` event, before that is sent), so a reference the client sends next already resolves. A stream
cut by an error keeps nothing. The store being off (`PROXY_RESPONSES_STORE_MB=0`) costs nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from claude_proxy.convert.responses import ResponsesRequest, ResponsesTranslation, to_anthropic_request, to_response
from claude_proxy.convert.responses_stream import ResponsesStreamTranslator, encode_events
from claude_proxy.server.body import parse, read_json_object
from claude_proxy.server.render import send_json
from claude_proxy.server.responses_store import ItemStore
from claude_proxy.server.state import Edge, Turn, bearer, edge_of, info_of, relay_stream
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.relay import Shape, StreamRelay


async def responses(scope: Scope, receive: Receive, send: Send) -> None:
    """Responses: OpenAI's Responses API, answered by Claude. Send the whole conversation in `input`; references to
    the output items of earlier answers of this process resolve while it keeps them."""
    edge, info = edge_of(scope), info_of(scope)
    payload, betas = await read_json_object(scope, receive, edge)
    request = parse(ResponsesRequest, payload)
    items = edge.items if edge.items.enabled else None
    owner = _owner(scope, edge) if items is not None else b""
    translated = to_anthropic_request(
        request, edge.options, None if items is None else (lambda ref: items.get(ref, owner))
    )
    info.model, info.stream = translated.translation.model, bool(request.stream)
    created = int(edge.clock())
    started = time.perf_counter()
    keep = (items, owner) if items is not None and request.store is not False else None
    async with Turn(edge, receive, info) as turn:
        if request.stream:
            await stream(scope, receive, send, edge, turn, translated, betas, created, started, keep)
        else:
            await complete(receive, send, edge, turn, translated, betas, created, keep)


async def complete(
    receive: Receive,
    send: Send,
    edge: Edge,
    turn: Turn,
    translated: ResponsesTranslation,
    betas: str | None,
    created: int,
    keep: tuple[ItemStore, bytes] | None = None,
) -> None:
    """One Messages request, answered as one Response object (its output items kept in `keep`, a store and the
    owner tag, if given)."""
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
    if keep is not None:
        store, owner = keep
        store.keep(body["output"], owner)
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
    keep: tuple[ItemStore, bytes] | None = None,
) -> None:
    """Anthropic's event stream relayed as the Responses event stream (`response.created` … `response.completed`);
    with `keep`, the finished Response's output items are kept there before its last event is sent."""
    translation = translated.translation
    relay = StreamRelay(
        edge.upstream,
        orjson.dumps({**translation.body, "stream": True}),
        betas,
        Shape(
            lambda: ResponsesStreamTranslator(
                model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
            ),
            encode=encode_events if keep is None else _keeping(*keep),
            done=b"",
            fail=lambda translator, error: encode_events(translator.fail(error)),
        ),
        idle_timeout=edge.settings.stream_idle_timeout,
    )
    await relay_stream(scope, receive, send, edge, turn, relay, started)


_FINAL = frozenset({"response.completed", "response.incomplete"})


def _owner(scope: Scope, edge: Edge) -> bytes:
    """Whose items a request may keep and reference: with inbound keys, the owner tag of the key it presented (already
    checked by then); without, everyone's."""
    if not edge.inbound:
        return b""
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    return edge.items.owner(bearer(authorization) or b"")


def _keeping(store: ItemStore, owner: bytes) -> Callable[[list[dict[str, Any]]], bytes]:
    """`encode_events` that first keeps the output of the finished Response (its event ends the last batch)."""

    def encode(events: list[dict[str, Any]]) -> bytes:
        if events and events[-1]["type"] in _FINAL:
            store.keep(events[-1]["response"]["output"], owner)
        return encode_events(events)

    return encode
