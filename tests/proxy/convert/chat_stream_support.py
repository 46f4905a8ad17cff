"""The harness of the stream translator's tests: decoder + translator over chunked bytes, the chunkings, reassembly
of chunks into one message (by hand and by the official SDK's accumulator), the checks every stream's shape must pass,
and builders of single Anthropic events."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.errors import UpstreamError
from claude_proxy.upstream.sse import SSEDecoder
from tests import paths

FIXTURES = paths.FIXTURES / "sse"
CREATED = 1_760_000_000
MODEL = "requested-model"


def translate(
    pieces: Iterable[bytes], *, include_usage: bool = True, json_tool: str | None = None
) -> tuple[list[dict[str, Any]], UpstreamError | None]:
    """Decode and translate a byte stream given in pieces; returns the chunks and the error that ended it, if any."""
    decoder = SSEDecoder()
    translator = StreamTranslator(model=MODEL, created=CREATED, include_usage=include_usage, json_tool=json_tool)
    chunks: list[dict[str, Any]] = []
    try:
        for piece in pieces:
            for event in decoder.feed(piece):
                chunks.extend(translator.feed(orjson.loads(event.data)))
        chunks.extend(translator.finish())
    except UpstreamError as exc:
        return chunks, exc
    assert translator.done
    return chunks, None


def splits(stream: bytes, *, seed: str, three_way: int = 40) -> Iterator[list[bytes]]:
    """Every 2-way split, some random 3-way splits, and byte by byte."""
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    rng = random.Random(seed)
    for _ in range(three_way):
        a, b = sorted(rng.sample(range(len(stream) + 1), 2))
        yield [stream[:a], stream[a:b], stream[b:]]
    yield [bytes([b]) for b in stream]


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client ends up with: joined content and reasoning, each call's id/name/arguments, finish, usage."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = usage = None
    for chunk in chunks:
        if "usage" in chunk:
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content"):
                content.append(delta["content"])
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id") or ""
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
            if choice["finish_reason"] is not None:
                finish = choice["finish_reason"]
    return {
        "content": "".join(content),
        "reasoning": "".join(reasoning),
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def check_shape(chunks: list[dict[str, Any]], *, include_usage: bool, complete: bool = True) -> None:
    """The protocol OpenAI clients parse (see the recorded OpenAI streams)."""
    assert chunks, "a stream always starts with the role chunk"
    head = chunks[0]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert (chunk["id"], chunk["created"], chunk["model"]) == (head["id"], head["created"], head["model"])
        assert chunk["id"].startswith("chatcmpl-")
        assert chunk["system_fingerprint"] is None
    assert head["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    body = chunks
    if include_usage and complete:
        *body, last = chunks
        assert last["choices"] == [] and set(last["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert not any("usage" in c for c in body)
    seen: set[int] = set()
    for n, chunk in enumerate(body):
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
        assert "role" not in choice["delta"] or n == 0
        is_last = n == len(body) - 1
        if complete and is_last:
            assert choice["delta"] == {} and choice["finish_reason"] in (
                "stop",
                "length",
                "tool_calls",
                "content_filter",
            )
        else:
            assert choice["finish_reason"] is None and (choice["delta"] or n == 0)
        for call in choice["delta"].get("tool_calls") or ():
            assert isinstance(call["index"], int)
            if call["index"] in seen:
                assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
                assert call["function"]["arguments"], "no empty fragments after the first"
            else:
                assert call["index"] == len(seen), "calls are numbered 0, 1, … in order"
                seen.add(call["index"])
                assert call["id"] and call["type"] == "function" and call["function"]["name"]
                assert call["function"]["arguments"] == ""


def sdk_reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Parse every chunk with the official SDK's type and accumulate them with its own stream state."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.current_completion_snapshot  # get_final_completion() refuses length/content_filter endings
    (choice,) = final.choices
    msg = choice.message
    return {
        "content": msg.content or "",
        "reasoning": (msg.model_extra or {}).get("reasoning_content") or "",
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in msg.tool_calls or ()
        ],
        "finish_reason": choice.finish_reason,
        "usage": final.usage.model_dump(exclude_none=True) if final.usage else None,
    }


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def feed_all(translator: StreamTranslator, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(translator.feed(event))
    return out


def start_event(**usage: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "usage": usage or {"input_tokens": 3},
        },
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def stop(stop_reason: str = "end_turn", **usage: Any) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": usage or {"output_tokens": 2}},
        {"type": "message_stop"},
    ]


def deltas_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def events_of(stream: bytes) -> list[str]:
    decoder = SSEDecoder()
    return [e.data for e in decoder.feed(stream)]
