"""A lean local stand-in for Anthropic's Messages API, built to never be the bottleneck of a benchmark.

Everything it sends is rendered once at start-up; a request is answered by one `transport.write`. It is a raw
asyncio protocol (on uvloop when installed) with just enough HTTP/1.1 for keep-alive clients: a request line,
headers, a Content-Length body. Nothing is validated and nothing is logged.

- `POST /v1/messages` answers a fixed message as JSON, or, when the body asks for `"stream":true`, a 200-delta
  event stream (chunked), written at once after the headers.
- With `"model":"bench-hold"` in the body the stream sends its head and first text delta, then stays open until
  `POST /bench/release` (or `--hold-max` seconds), then finishes: this is how many streams are held open at once.
- With `"model":"bench-paced"` the stream is paced like a model writing: its head, then `--paced-rate` text deltas
  a second for `--paced-seconds`, each written on its own as it is due, then the tail. Every paced delta's text is
  `tk_<n>@<CLOCK_MONOTONIC ns when it was written> `, so a client on this machine can tell each token's latency.
  One timer serves every paced stream (`Pacer`: the streams due within a millisecond are written in one turn of the
  loop), so a thousand streams cost the stand-in one wake-up per due time, not a task and a timer per delta.
- A request line in absolute form (`POST http://host:port/v1/messages`, as sent through a forwarding HTTP proxy) is
  read as its path.
- `GET /v1/models` answers a short list; anything else is a 404.

Run: `python bench/upstream.py --port 9100` (prints `ready <port>` on stdout once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import signal
import sys
import time

DELTAS = 200
TOKEN = "tk_"  # every text delta starts with it, so clients can find and count tokens in the raw bytes
HOLD_MARKER = b'"model":"bench-hold"'
PACED_MARKER = b'"model":"bench-paced"'
STREAM_MARKER = b'"stream":true'


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def message_body() -> bytes:
    text = " ".join(f"word{i}" for i in range(120))  # about 900 characters, a typical short answer
    return _json(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 120,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 240,
                "service_tier": "standard",
            },
        }
    ).encode()


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {_json(data)}\n\n"


def stream_parts(deltas: int = DELTAS) -> tuple[bytes, bytes]:
    """The event stream as (head through the first text delta, the rest), so a held stream can stop in between."""
    head = [
        _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-6",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 120, "output_tokens": 1},
                },
            },
        ),
        _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _event("ping", {"type": "ping"}),
    ]
    deltas_text = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"{TOKEN}{i} "}},
        )
        for i in range(deltas)
    ]
    tail = [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    first = "".join([*head, deltas_text[0]]).encode()
    rest = "".join([*deltas_text[1:], *tail]).encode()
    return first, rest


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"request-id: req_bench\r\n\r\n" + body


MESSAGE = _response("200 OK", message_body())
MODELS = _response(
    "200 OK",
    _json({"data": [{"id": "claude-sonnet-4-6", "created_at": "2025-01-01T00:00:00Z"}], "has_more": False}).encode(),
)
NOT_FOUND = _response("404 Not Found", b'{"type":"error","error":{"type":"not_found_error","message":"not found"}}')
RELEASED = _response("200 OK", b'{"released":true}')
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)
_FIRST, _REST = stream_parts()
STREAM = STREAM_HEAD + _chunk(_FIRST + _REST) + b"0\r\n\r\n"
HOLD_FIRST = STREAM_HEAD + _chunk(_FIRST)
HOLD_REST = _chunk(_REST) + b"0\r\n\r\n"


_DELTA_HEAD, _DELTA_TAIL = (
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "@TEXT@"}},
    )
    .encode()
    .split(b"@TEXT@")
)


def paced_delta(i: int) -> bytes:
    """A text delta stamped with the time it is written (its text needs no JSON escaping: it is spliced in)."""
    return _chunk(b"%s%s%d@%d %s" % (_DELTA_HEAD, TOKEN.encode(), i, time.monotonic_ns(), _DELTA_TAIL))


_PACED_HEAD = _FIRST[: _FIRST.rfind(b"event: content_block_delta")]
PACED_FIRST = STREAM_HEAD + _chunk(_PACED_HEAD)
PACED_TAIL = _chunk(_REST[_REST.find(b"event: content_block_stop") :]) + b"0\r\n\r\n"


class Pacer:
    """Every paced stream's schedule in one heap, written from one timer: deltas at `rate` a second for `seconds`,
    each stream on a fixed schedule from its start (a late delta does not push back the next)."""

    SLACK = 0.001  # deltas due this soon are written in the same turn

    def __init__(self, rate: float, seconds: float) -> None:
        self.rate = rate
        self.count = max(1, round(rate * seconds))
        self.loop = asyncio.get_running_loop()
        self.heap: list[tuple[float, int, int, float, Upstream]] = []  # (due, tie, delta index, start, stream)
        self.tie = itertools.count()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, stream: Upstream) -> None:
        start = self.loop.time()
        self._push(start + 1 / self.rate, 0, start, stream)

    def _push(self, due: float, index: int, start: float, stream: Upstream) -> None:
        heapq.heappush(self.heap, (due, next(self.tie), index, start, stream))
        if self.timer is None or due < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(due, self._run)

    def _run(self) -> None:
        self.timer = None
        heap, horizon = self.heap, self.loop.time() + self.SLACK
        while heap and heap[0][0] <= horizon:
            _, _, index, start, stream = heapq.heappop(heap)
            transport = stream.transport
            if transport is None:
                continue
            transport.write(paced_delta(index))
            if index + 1 < self.count:
                heapq.heappush(heap, (start + (index + 2) / self.rate, next(self.tie), index + 1, start, stream))
            else:
                transport.write(PACED_TAIL)
                stream.busy = False
                stream.process()
        if heap:
            self.timer = self.loop.call_at(heap[0][0], self._run)


class Hold:
    """Streams waiting for `POST /bench/release`; each new hold waits on the current generation's future."""

    def __init__(self, max_seconds: float, paced_rate: float = 20.0, paced_seconds: float = 10.0) -> None:
        self.max_seconds = max_seconds
        self.pacer = Pacer(paced_rate, paced_seconds)
        self.tasks: set[asyncio.Task[None]] = set()
        self.release = asyncio.get_running_loop().create_future()
        self.open = 0

    def fire(self) -> None:
        if not self.release.done():
            self.release.set_result(None)
        self.release = asyncio.get_running_loop().create_future()


class Upstream(asyncio.Protocol):
    __slots__ = ("buf", "busy", "hold", "transport")

    def __init__(self, hold: Hold) -> None:
        self.hold = hold
        self.buf = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        buf = self.buf
        while self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            space = head.find(b" ")
            if head[space + 1 : space + 8] == b"http://":  # absolute form: keep the path only
                path = head.find(b"/", space + 8)
                head = head[: space + 1] + head[path:]
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            if head.startswith(b"post /v1/messages"):
                if body.find(STREAM_MARKER) < 0:
                    self.transport.write(MESSAGE)
                elif body.find(PACED_MARKER) >= 0:
                    self.busy = True
                    self.transport.write(PACED_FIRST)
                    self.hold.pacer.add(self)
                    return
                elif body.find(HOLD_MARKER) >= 0:
                    self.busy = True
                    self.transport.write(HOLD_FIRST)
                    task = asyncio.ensure_future(self.finish_held())
                    self.hold.tasks.add(task)
                    task.add_done_callback(self.hold.tasks.discard)
                    return
                else:
                    self.transport.write(STREAM)
            elif head.startswith(b"post /bench/release"):
                self.hold.fire()
                self.transport.write(RELEASED)
            elif head.startswith(b"get /v1/models"):
                self.transport.write(MODELS)
            else:
                self.transport.write(NOT_FOUND)

    async def finish_held(self) -> None:
        self.hold.open += 1
        try:
            await asyncio.wait_for(asyncio.shield(self.hold.release), self.hold.max_seconds)
        except TimeoutError:
            pass
        finally:
            self.hold.open -= 1
        if self.transport is not None:
            self.transport.write(HOLD_REST)
        self.busy = False
        self.process()


async def serve(host: str, port: int, hold_max: float, paced_rate: float, paced_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    hold = Hold(hold_max, paced_rate, paced_seconds)
    server = await loop.create_server(lambda: Upstream(hold), host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lean local Anthropic stand-in for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hold-max", type=float, default=60.0, help="longest a held stream waits for a release")
    parser.add_argument("--paced-rate", type=float, default=20.0, help="text deltas a second of a paced stream")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="how long a paced stream lasts")
    args = parser.parse_args(argv)
    run = serve(args.host, args.port, args.hold_max, args.paced_rate, args.paced_seconds)
    try:
        import uvloop
    except ImportError:  # plain asyncio is fast enough, only less so
        asyncio.run(run)
    else:
        uvloop.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
