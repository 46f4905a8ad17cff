"""A bare OpenAI → Anthropic forwarder, run under the same uvicorn as the proxy: the ceiling a proxy can reach there.

It does the least a translating proxy must: read the body, rewrite the chat request into a Messages request (text
only), POST it on a kept-alive connection, rewrite the answer into a chat completion and send it. Nothing else: no
validation, inbound keys, limits, retries, timeouts, error mapping, metrics or logging. `make bench` measures it at
concurrency 16 next to the direct path, so the table shows how much of the direct path uvicorn and the bare
translation leave on this machine, whatever the proxy does on top.

A streamed request (`"stream": true`) is relayed untranslated: the upstream's event stream is read with aiohttp (the
proxy's HTTP library) and each read is written on as it is, with no decoding, translation or idle check. It is the
floor of what a relayed event costs under uvicorn with that library here (`make bench` runs its paced streams).

Run: `BENCH_UPSTREAM_PORT=9100 uvicorn bench.forwarder:app --port 9300`. A GET answers 200 (for readiness).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import orjson

UPSTREAM = ("127.0.0.1", int(os.environ.get("BENCH_UPSTREAM_PORT", "9100")))
HEAD = (
    b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"x-api-key: bench-dummy-key\r\nanthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n"
)
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream")]
_session: list[aiohttp.ClientSession] = []


class Connection(asyncio.Protocol):
    """One kept-alive upstream connection; answers are read by Content-Length (the stand-in never chunks them).
    Not `bench.client.Connection`: that one times each request and watches for tokens, which costs the forwarder
    about a tenth of its throughput, and a ceiling must not pay for the benchmark's bookkeeping."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        start = head.find(b"content-length:") + len(b"content-length:")
        stop = head.find(b"\r\n", start)
        length = int(head[start : stop if stop > 0 else len(head)])
        if len(self.buffer) >= end + 4 + length:
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            waiter, self.waiter = self.waiter, None
            waiter.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed the connection"))


_idle: list[Connection] = []


async def call(body: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    conn = _idle.pop() if _idle else (await loop.create_connection(Connection, *UPSTREAM))[1]
    assert conn.transport is not None
    conn.waiter = loop.create_future()
    conn.transport.write(HEAD % len(body) + body)
    answer = await conn.waiter
    _idle.append(conn)
    return answer


def to_anthropic(chat: dict[str, Any]) -> dict[str, Any]:
    system = [{"type": "text", "text": m["content"]} for m in chat["messages"] if m["role"] == "system"]
    messages = [
        {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
        for m in chat["messages"]
        if m["role"] != "system"
    ]
    body = {"model": chat["model"], "max_tokens": chat.get("max_tokens", 1024), "messages": messages}
    if system:
        body["system"] = system
    if "temperature" in chat:
        body["temperature"] = chat["temperature"]
    return body


def to_openai(message: dict[str, Any]) -> dict[str, Any]:
    usage = message["usage"]
    return {
        "id": "chatcmpl-" + message["id"],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message["model"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(b["text"] for b in message["content"] if b["type"] == "text"),
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        },
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                _session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
                await send({"type": "lifespan.startup.complete"})
            else:
                for session in _session:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET":
        answer = b'{"status":"ok"}'
    else:
        chunks, more = [], True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        chat = orjson.loads(b"".join(chunks))
        if chat.get("stream"):
            await relay(to_anthropic(chat), send)
            return
        reply = await call(orjson.dumps(to_anthropic(chat)))
        answer = orjson.dumps(to_openai(orjson.loads(reply)))
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def relay(body: dict[str, Any], send: Any) -> None:
    """The upstream's event stream, each read written on untranslated."""
    url = f"http://{UPSTREAM[0]}:{UPSTREAM[1]}/v1/messages"
    headers = {"x-api-key": "bench-dummy-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with _session[0].post(url, data=orjson.dumps({**body, "stream": True}), headers=headers) as answer:
        await send({"type": "http.response.start", "status": answer.status, "headers": SSE_HEADERS})
        async for chunk in answer.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
