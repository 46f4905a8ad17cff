"""The streaming relay: the bytes a client gets do not depend on how the upstream's stream was cut into network
reads (the relay writes once per read, so batching must never reorder, drop or hold back). The upstream's answer is
handed to the relay in exactly the given pieces, which a socket could not promise."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.upstream.relay import Shape, StreamRelay
from tests import paths
from tests.fakes.anthropic import message, render_sse, text

FIXTURES = paths.FIXTURES / "sse"


class Pieces:
    """An open upstream answer (what `Client.open` returns) whose body arrives in the given pieces."""

    status_code = 200
    headers = {"content-type": "text/event-stream"}

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False

    async def next_chunk(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    async def close(self) -> None:
        self.closed = True


class OneStream:
    """The upstream layer's side the relay uses, answering one stream (read by the relay's hook, not retried)."""

    def __init__(self, response: Pieces) -> None:
        self.response = response

    async def send_with_retries(
        self, body: bytes, client_betas: str | None, *, opened: Callable[[Pieces], Awaitable[None]], **_: Any
    ) -> Pieces:
        await opened(self.response)
        return self.response


async def relay_output(pieces: list[bytes], tmp_path: Path) -> list[bytes]:
    """Every write the relay makes to the client, for an upstream stream delivered in `pieces`."""
    response = Pieces(pieces)
    relay = StreamRelay(
        OneStream(response),  # type: ignore[arg-type]
        b"{}",
        None,
        Shape(lambda: StreamTranslator(model="m", created=1, include_usage=True)),
    )
    await relay.start()
    writes: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        assert message["type"] == "http.response.body" and message["more_body"] is True
        writes.append(message["body"])

    await relay.pump(send)  # type: ignore[arg-type]
    assert response.closed
    return writes


def events_of(writes: list[bytes]) -> list[Any]:
    body = b"".join(writes)
    assert body.endswith(b"\n\n")
    out: list[Any] = []
    for block in body[:-2].split(b"\n\n"):
        assert block.startswith(b"data: ")
        data = block[6:]
        out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def cuts(stream: bytes, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    variants = [[stream], [bytes([b]) for b in stream]]
    for _ in range(6):
        points = sorted(rng.sample(range(1, len(stream)), 5))
        variants.append([stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)])
    return variants


@pytest.mark.parametrize("name", ["text_utf8.sse", "parallel_tools_crlf.sse", "thinking_signature.sse"])
async def test_output_is_the_same_however_the_stream_is_cut(name: str, tmp_path: Path) -> None:
    stream = (FIXTURES / name).read_bytes()
    expected = None
    for pieces in cuts(stream, seed=len(name)):
        events = events_of(await relay_output(pieces, tmp_path))
        assert events[-1] == "[DONE]"
        expected = expected or events
        assert events == expected


async def test_whole_stream_in_one_read_is_relayed_in_few_writes(tmp_path: Path) -> None:
    stream = (FIXTURES / "text_utf8.sse").read_bytes()
    one_read = await relay_output([stream], tmp_path)
    per_byte = await relay_output([bytes([b]) for b in stream], tmp_path)
    assert events_of(one_read) == events_of(per_byte)
    # The first output goes out on its own (time to first token), everything else already received in one more
    # write, and [DONE] once the upstream stream has ended.
    assert len(one_read) == 3
    assert len(per_byte) > len(one_read)


async def test_error_in_the_same_read_as_text_keeps_the_text_then_ends_with_the_error(tmp_path: Path) -> None:
    stream = (FIXTURES / "error_overloaded.sse").read_bytes()
    for pieces in cuts(stream, seed=7):
        events = events_of(await relay_output(pieces, tmp_path))
        text = "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e.get("choices")
        )
        assert text == "Partial ånswer"
        assert events[-1]["error"]["type"] == "overloaded_error"
        assert "[DONE]" not in events


async def test_a_long_read_before_the_first_output_is_relayed_whole_and_in_order(tmp_path: Path) -> None:
    """A read far longer than the slice decoded before the first output: nothing of it is lost or reordered."""
    answer = "".join(f"w{i} " for i in range(2000))
    stream = b"".join(render_sse(message(text(answer))))
    assert len(stream) > 20 * 4096
    one_read = await relay_output([stream], tmp_path)
    assert len(one_read) == 3  # the first output, the rest of the read, [DONE]
    events = events_of(one_read)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == answer
    for pieces in cuts(stream, seed=3)[2:]:  # cut at random points (not byte by byte: 80 kB)
        assert events_of(await relay_output(pieces, tmp_path)) == events
