"""Streaming end to end: the official openai SDK (sync and async) -> the app under uvicorn -> the fake Anthropic."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, render_sse, text, thinking, tool_use

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
ASK = [{"role": "user", "content": "Hello"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)


def reassemble(stream: Any) -> dict[str, Any]:
    """What a client rebuilds from the chunks (the fields both modes must agree on)."""
    content, reasoning, finish, usage, ids = "", "", None, None, set()
    calls: dict[int, dict[str, str]] = {}
    roles = []
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.append(delta.role)
            content += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += (call.function and call.function.name) or ""
                slot["arguments"] += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert len(ids) == 1, "all chunks share one id"
    assert roles == ["assistant"]
    return {
        "content": content or None,
        "reasoning": reasoning or None,
        "tool_calls": [dict(calls[i], arguments=json.loads(calls[i]["arguments"])) for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def flatten(completion: Any) -> dict[str, Any]:
    msg = completion.choices[0].message
    return {
        "content": msg.content or None,
        "reasoning": (msg.model_extra or {}).get("reasoning_content"),
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
            for c in msg.tool_calls or []
        ],
        "finish_reason": completion.choices[0].finish_reason,
        "usage": completion.usage.model_dump(),
    }


SCENARIOS = {
    "text": message(text("Bonjour, ça va? ✓ 日本語 🎉 " * 5)),
    "tools": message(
        text("Let me check both."),
        tool_use("toolu_a", "get_weather", {"city": "Paris", "units": ["c", "f"]}),
        tool_use("toolu_b", "get_time", {}),
        stop_reason="tool_use",
    ),
    "thinking": message(thinking("First, consider the question carefully."), text("Answer.")),
    "length": message(text("cut"), stop_reason="max_tokens"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_streamed_answer_equals_non_streamed(fake: FakeAnthropic, proxy: ProxyFactory, name: str) -> None:
    c = client(proxy())
    extra: dict[str, Any] = {"tools": TOOLS} if name == "tools" else {}
    if name == "thinking":
        extra["reasoning_effort"] = "low"
    fake.script(SCENARIOS[name], SCENARIOS[name])
    whole = c.chat.completions.create(model="claude-sonnet-4-5", messages=ASK, **extra)
    streamed = c.chat.completions.create(
        model="claude-sonnet-4-5", messages=ASK, stream=True, stream_options={"include_usage": True}, **extra
    )
    assert reassemble(streamed) == flatten(whole)
    assert fake.messages_requests[-1].body["stream"] is True


def test_sdk_stream_helper_and_no_usage_without_include_usage(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(SCENARIOS["tools"])
    c = client(proxy())
    with c.chat.completions.stream(model="claude-sonnet-4-6", messages=ASK, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        ("toolu_a", "get_weather", {"city": "Paris", "units": ["c", "f"]}),
        ("toolu_b", "get_time", {}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    fake.script(SCENARIOS["text"])
    chunks = list(c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_client_streams(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    fake.script(SCENARIOS["text"])

    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as ac:
            stream = await ac.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == SCENARIOS["text"]["content"][0]["text"]


def test_json_object_mode_streams_the_json_as_content(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(tool_use("toolu_j", "json_response", {"answer": [1, 2]}), stop_reason="tool_use"))
    chunks = client(proxy()).chat.completions.create(
        model="claude-sonnet-4-6", messages=ASK, stream=True, response_format={"type": "json_object"}
    )
    out = reassemble(chunks)
    assert json.loads(out["content"]) == {"answer": [1, 2]}
    assert out["tool_calls"] == [] and out["finish_reason"] == "stop"


def test_error_before_first_byte_is_an_http_error(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(ErrorReply(400, "invalid_request_error", "prompt is too long: 300000 tokens > 200000 maximum"))
    with pytest.raises(openai.BadRequestError) as info:
        client(proxy()).chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True)
    assert info.value.code == "context_length_exceeded"


def events_then(*tail: bytes | float, text_value: str = "partial answer") -> dict[str, Any]:
    """A reply whose stream is the start of a normal text answer followed by `tail` (raw SSE bytes or pauses)."""
    head = list(render_sse(message(text(text_value))))
    # keep message_start, ping, block start and the deltas; drop the block stop, message_delta and message_stop
    return {**message(text(text_value)), "_events": [*head[:-3], *tail]}


OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)


def test_error_after_first_byte_is_an_error_line_the_sdk_raises(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(events_then(OVERLOADED))
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in client(proxy()).chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True):
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "Overloaded" in str(info.value)
    assert received == "partial answer"
    assert len(fake.messages_requests) == 1  # output had begun: never retried, never duplicated


def test_raw_error_line_and_no_done_after_failure(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(events_then())  # the stream just ends, without message_stop
    with httpx.stream(
        "POST", f"{proxy()}/v1/chat/completions", json={"model": "claude-sonnet-4-6", "messages": ASK, "stream": True}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1].startswith("data: {")
    assert json.loads(lines[-1][len("data: ") :])["error"]["type"] == "upstream_error"
    assert "data: [DONE]" not in lines


def test_retry_then_success_for_http_errors_and_early_error_events(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy())
    fake.script(
        ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "10"}),
        ErrorReply(503, "api_error", "unavailable", headers={"retry-after-ms": "10"}),
        SCENARIOS["text"],
    )
    out = reassemble(c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True))
    assert out["content"] == SCENARIOS["text"]["content"][0]["text"]
    assert len(fake.messages_requests) == 3
    # an error event before any output: nothing was sent yet, so it is retried too (at most once here)
    early = {**message(text("x")), "_events": [next(iter(render_sse(message(text("x"))))), OVERLOADED]}
    fake.script(early, message(text("second try")))
    out = reassemble(c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True))
    assert out["content"] == "second try"
    # non-streaming retries the same way
    fake.script(ErrorReply(429, "rate_limit_error", "slow down", headers={"retry-after": "0"}), message(text("ok")))
    assert c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK).choices[0].message.content == "ok"


def test_retries_exhausted_give_the_upstream_status_and_retry_after(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy(PROXY_MAX_RETRIES="2"))
    busy = ErrorReply(429, "rate_limit_error", "rate limited", headers={"retry-after": "0"})
    fake.script(busy, busy, busy, busy)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True)
    assert info.value.response.headers["retry-after"] == "0"
    assert len(fake.messages_requests) == 3
    # a hint longer than the allowed total wait is not slept on: the client gets it at once
    fake.replies.clear()
    fake.script(ErrorReply(429, "rate_limit_error", "later", headers={"retry-after": "3600"}))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK)
    assert time.monotonic() - started < 5
    assert info.value.response.headers["retry-after"] == "3600"
    # retries off
    fake.script(busy, message(text("never")))
    with pytest.raises(openai.RateLimitError):
        client(proxy(PROXY_MAX_RETRIES="0")).chat.completions.create(model="claude-sonnet-4-6", messages=ASK)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_client_disconnect_closes_the_upstream_stream(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    # A long answer with a pause: the client leaves during the pause, while the upstream is silent.
    fake.script(events_then(30.0, text_value="first words"))
    stream = client(proxy()).chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    assert wait_for(lambda: fake.open_streams == 1)
    stream.close()
    assert wait_for(lambda: fake.open_streams == 0 and fake.disconnects == 1, timeout=3.0)


def test_client_disconnect_while_waiting_for_a_non_streamed_answer(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()

    def slow(record: Any) -> dict[str, Any]:
        time.sleep(1.0)
        return message(text("late"))

    fake.script(slow)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": ASK}, timeout=0.3)
    # the proxy gave up its upstream request: the fake finds the connection closed when the answer is ready
    assert wait_for(lambda: fake.abandoned == 1, timeout=4.0)
    fake.script(message(text("next")))
    assert client(url).chat.completions.create(model="m", messages=ASK).choices[0].message.content == "next"


def test_stalled_stream_is_cut_with_an_error_line(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(events_then(5.0))
    c = client(proxy(PROXY_STREAM_IDLE_TIMEOUT="0.5"))
    started = time.monotonic()
    with pytest.raises(openai.APIError) as info:
        for _ in c.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, stream=True):
            pass
    assert "stalled" in str(info.value)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("way", ["http_529", "first_event"])
def test_overloaded_before_output_is_a_503_the_dotnet_sdk_retries(
    fake: FakeAnthropic, proxy: ProxyFactory, way: str
) -> None:
    if way == "http_529":
        fake.script(ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after": "3"}))
    else:
        fake.script({**message(text("x")), "_events": [next(iter(render_sse(message(text("x"))))), OVERLOADED]})
    with pytest.raises(openai.InternalServerError) as info:
        client(proxy(PROXY_MAX_RETRIES="0")).chat.completions.create(
            model="claude-sonnet-4-6", messages=ASK, stream=True
        )
    assert info.value.status_code == 503
    assert (info.value.type, info.value.code) == ("overloaded_error", "overloaded_error")
    if way == "http_529":
        assert info.value.response.headers["retry-after"] == "3"


def test_overloaded_after_output_is_an_error_line_of_type_overloaded(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(events_then(OVERLOADED))
    with httpx.stream(
        "POST", f"{proxy()}/v1/chat/completions", json={"model": "claude-sonnet-4-6", "messages": ASK, "stream": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    error = json.loads(lines[-1][len("data: ") :])["error"]
    assert (error["type"], error["code"]) == ("overloaded_error", "overloaded_error")
