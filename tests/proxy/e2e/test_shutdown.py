"""Graceful shutdown of a real `claude-proxy serve` process: SIGTERM while streams and a slow answer are open."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY
from tests.fakes.anthropic import FakeAnthropic, message, render_sse, text
from tests.proxy.serve_support import serve_process

pytestmark = pytest.mark.slow

BODY = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}], "stream": True}


PLAIN = {**BODY, "stream": False}


def slow_answer(record: Any) -> dict[str, Any]:
    time.sleep(4.5)  # longer than the grace period; the fake then finds its client (the proxy) gone
    return message(text("too late"))


def paused_stream(value: str, pause: float) -> dict[str, Any]:
    """A text answer whose stream stops for `pause` seconds after the first text, then completes."""
    events = list(render_sse(message(text(value)), piece=len(value)))
    return {**message(text(value)), "_events": [*events[:4], pause, *events[4:]]}


class StreamReader(threading.Thread):
    """Reads one streamed answer's lines in the background (chat completions unless told another path and body)."""

    def __init__(self, url: str, path: str = "/v1/chat/completions", body: dict[str, Any] = BODY) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.body = url, path, body
        self.lines: list[str] = []
        self.first = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, timeout=30) as response:
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()
        except BaseException as exc:  # recorded for the assertions
            self.error = exc
        finally:
            self.first.set()


def test_sigterm_drains_streams_within_the_grace_then_ends_them_with_an_error_line(
    fake: FakeAnthropic, tmp_path: Path
) -> None:
    """Each stream cut at the deadline ends in its own protocol: chat completions with an error line, the Responses
    API with `response.failed`, Anthropic's Messages API with an `error` event."""
    grace = 2.0
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "PROXY_SHUTDOWN_GRACE": str(grace)}
    fake.script(
        paused_stream("finishes in time", 0.8),
        paused_stream("outlives the grace", 60.0),
        paused_stream("a response cut short", 60.0),
        paused_stream("a message cut short", 60.0),
        slow_answer,
    )
    with serve_process(env, tmp_path) as served:
        quick = StreamReader(served.url)
        quick.start()
        assert quick.first.wait(10)
        slow = StreamReader(served.url)
        slow.start()
        assert slow.first.wait(10)
        response = StreamReader(served.url, "/v1/responses", {"model": BODY["model"], "input": "Hi", "stream": True})
        response.start()
        assert response.first.wait(10)
        anthropic = StreamReader(served.url, "/v1/messages", {**BODY, "max_tokens": 64})
        anthropic.start()
        assert anthropic.first.wait(10)
        assert fake.open_streams == 4
        waiting: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: waiting.append(httpx.post(f"{served.url}/v1/chat/completions", json=PLAIN, timeout=30))
        )
        asked = len(fake.messages_requests)
        waiter.start()
        deadline = time.monotonic() + 5
        while len(fake.messages_requests) <= asked and time.monotonic() < deadline:  # until it waits on the upstream
            time.sleep(0.02)
        assert len(fake.messages_requests) > asked

        started = time.monotonic()
        served.terminate()
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{served.url}/readyz", timeout=1)

        for reader in (quick, slow, response, anthropic, waiter):
            reader.join(10)
        code = served.process.wait(10)
        elapsed = time.monotonic() - started

    # the stream that finished within the grace period is complete
    assert quick.error is None
    assert quick.lines[-1] == "data: [DONE]"
    assert "finishes in time" in "".join(quick.lines)
    # the one that did not was ended after the grace period with an error line, never [DONE]
    assert slow.error is None
    assert "data: [DONE]" not in slow.lines
    error = json.loads(slow.lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == "shutting_down" and "PROXY_SHUTDOWN_GRACE" in error["message"]
    # the Responses stream: the text so far, then response.failed saying why (the openai SDKs raise on it)
    assert response.error is None
    events = [json.loads(line.removeprefix("data: ")) for line in response.lines if line.startswith("data: ")]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "a response cut short"
    assert events[-1]["type"] == "response.failed" and response.lines[-2] == "event: response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "PROXY_SHUTDOWN_GRACE" in failed["error"]["message"]
    assert not [e for e in events if e["type"] == "response.completed"]
    # the Messages stream: Anthropic's events as sent, then an error event, no message_stop
    assert anthropic.error is None
    assert anthropic.lines[-2] == "event: error" and "event: message_stop" not in anthropic.lines
    error = json.loads(anthropic.lines[-1].removeprefix("data: "))
    assert error["type"] == "error" and "PROXY_SHUTDOWN_GRACE" in error["error"]["message"]
    assert grace <= elapsed < grace + 5
    assert code == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down cleanly
    # the non-streamed request still waiting for its answer got a 503 that says why
    assert waiting[0].status_code == 503 and waiting[0].json()["error"]["code"] == "shutting_down"
    # their upstream requests were closed, not orphaned
    deadline = time.monotonic() + 3
    while fake.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.open_streams == 0
    while fake.abandoned < 1 and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert fake.abandoned == 1

    # the log: JSON lines only, one access line per request, uvicorn's access log not duplicating it
    lines = [json.loads(line) for line in served.log_lines()]
    access = [line for line in lines if line["logger"] == "claude_proxy.access"]
    chats = [line for line in access if line["path"] == "/v1/chat/completions"]
    assert len(chats) == 3
    assert sorted(str(line["error"]) for line in chats) == ["None", "shutting_down", "shutting_down"]
    others = [line for line in access if line["path"] in ("/v1/responses", "/v1/messages")]
    assert sorted((line["path"], line["error"]) for line in others) == [
        ("/v1/messages", "shutting_down"),
        ("/v1/responses", "shutting_down"),
    ]
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("draining" in line.get("message", "") for line in lines)
    assert any(line.get("message") == "Application shutdown complete." for line in lines)


def test_sigterm_with_nothing_in_flight_exits_at_once(fake: FakeAnthropic, tmp_path: Path) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY}  # the default grace, 25 s, is not waited
    with serve_process(env, tmp_path) as served:
        assert httpx.get(f"{served.url}/readyz").json()["status"] == "ready"
        started = time.monotonic()
        served.terminate()
        assert served.process.wait(10) == -signal.SIGTERM
        assert time.monotonic() - started < 3
