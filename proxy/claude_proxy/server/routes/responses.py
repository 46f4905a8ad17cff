"""POST /v1/responses: OpenAI's Responses API over the same machinery as chat completions.

The request is translated by `convert.responses` (which goes through the chat translation), sent with the same
upstream calls (`Upstream.create_message`, `StreamRelay`: one retry loop and budget, the same error mapping), holding
the same `UpstreamSlot` (concurrency limit, usage), under the same disconnect watch and shutdown drain, and recorded on
the same access line and metrics. Only the shapes differ: a Response object, or the Responses event stream.

Unless the request says `store: false`, the Response's output items go into the app's `ItemStore` before the
client can see them (the whole answer before it is sent; a stream's items with its `response.completed` or
`response.incomplete` event, before that is sent), so a reference the client sends next already resolves. A stream
cut by an error keeps nothing. The store being off (`PROXY_RESPONSES_STORE_MB=0`) costs nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.convert.responses import ResponsesRequest, ResponsesTranslation, to_anthropic_request, to_response
from claude_proxy.convert.responses_stream import ResponsesStreamTranslator, encode_events
from claude_proxy.server.body import JsonBody
from claude_proxy.server.inbound import RequestHeaders, openai_key, request_headers
from claude_proxy.server.render import json_response
from claude_proxy.server.responses_store import ItemStore
from claude_proxy.server.routing import STREAMABLE, ProxyRoute
from claude_proxy.server.state import AppState, UpstreamSlot, app_state, bearer, relay_stream, request_info
from claude_proxy.server.streaming import until_disconnect
from claude_proxy.upstream.relay import Shape, StreamRelay

router = APIRouter(route_class=ProxyRoute, dependencies=[Depends(openai_key)])


@router.post(
    "/v1/responses",
    summary="Responses",
    description=(
        "OpenAI's Responses API, answered by Claude. Send the whole conversation in `input`; references to the "
        "output items of earlier answers of this process resolve while it keeps them."
    ),
    responses=STREAMABLE,
)
@router.post("/responses", include_in_schema=False)
async def responses(
    request: Request,
    headers: Annotated[RequestHeaders, Depends(request_headers)],
    body: Annotated[ResponsesRequest, Depends(JsonBody(ResponsesRequest))],
) -> Response:
    state, info = app_state(request), request_info(request)
    items = state.items if state.items.enabled else None
    owner = _owner(state, headers) if items is not None else b""
    translated = to_anthropic_request(
        body, state.options, None if items is None else (lambda ref: items.get(ref, owner))
    )
    info.model, info.stream = translated.translation.model, bool(body.stream)
    created = int(state.clock())
    started = time.perf_counter()
    store = items if body.store is not False else None
    betas = headers.first_beta
    async with UpstreamSlot(state, request.receive, info) as slot:
        if body.stream:
            return await stream(request, state, slot, translated, betas, created, started, store, owner)
        return await complete(request, state, slot, translated, betas, created, store, owner)


async def complete(
    request: Request,
    state: AppState,
    slot: UpstreamSlot,
    translated: ResponsesTranslation,
    betas: str | None,
    created: int,
    store: ItemStore | None = None,
    owner: bytes = b"",
) -> Response:
    """One Messages request, answered as one Response object (its output items kept in `store`, if given, under
    `owner`)."""
    translation, upstream = translated.translation, state.upstream
    message, headers = await until_disconnect(
        request.receive, lambda: upstream.create_message(translation.body, betas), state.drain
    )
    request_id = headers.get("request-id")
    slot.info.upstream_request_id = request_id
    slot.answered(message)
    body = to_response(
        message, model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
    )
    if store is not None:
        store.keep(body["output"], owner)
    return json_response(body, headers={"x-upstream-request-id": request_id} if request_id else None)


async def stream(
    request: Request,
    state: AppState,
    slot: UpstreamSlot,
    translated: ResponsesTranslation,
    betas: str | None,
    created: int,
    started: float,
    store: ItemStore | None = None,
    owner: bytes = b"",
) -> Response:
    """Anthropic's event stream relayed as the Responses event stream (`response.created` … `response.completed`);
    with `store`, the finished Response's output items are kept there, under `owner`, before its last event is
    sent."""
    translation = translated.translation
    relay = StreamRelay(
        state.upstream,
        orjson.dumps({**translation.body, "stream": True}),
        betas,
        Shape(
            lambda: ResponsesStreamTranslator(
                model=translation.model, created_at=created, echo=translated.echo, json_tool=translation.json_tool
            ),
            encode=encode_events if store is None else _keeping(store, owner),
            done=b"",
            fail=lambda translator, error: encode_events(translator.fail(error)),
        ),
        idle_timeout=state.settings.stream_idle_timeout,
    )
    response = await relay_stream(request.receive, state, slot, relay, started)
    assert response is not None  # only a passthrough relay opens onto an error answer it leaves to its caller
    return response


_FINAL = frozenset({"response.completed", "response.incomplete"})


def _owner(state: AppState, headers: RequestHeaders) -> bytes:
    """Whose items a request may keep and reference: with inbound keys, the owner tag of the key it presented (already
    checked by then); without, everyone's."""
    if not state.inbound:
        return b""
    return state.items.owner(bearer(headers.authorization) or b"")


def _keeping(store: ItemStore, owner: bytes) -> Callable[[list[dict[str, Any]]], bytes]:
    """`encode_events` that first keeps the output of the finished Response (its event ends the last batch)."""

    def encode(events: list[dict[str, Any]]) -> bytes:
        if events and events[-1]["type"] in _FINAL:
            store.keep(events[-1]["response"]["output"], owner)
        return encode_events(events)

    return encode
