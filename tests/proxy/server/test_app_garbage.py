"""A request leaves no reference cycle behind: its objects are freed when it ends, not left to Python's cyclic
garbage collector, whose collections stop the event loop (milliseconds each, with every stream waiting on it).

The proxy runs in the server `claude-proxy serve` builds, under uvicorn in this process, against the fake; the
collector's DEBUG_SAVEALL keeps what it finds unreachable, and the test looks for the server's and the proxy's own
objects among it (the client's and the fake's garbage, in the same process, is not the proxy's)."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from starlette.datastructures import State

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text

ROUNDS = 5


def _ours(obj: object) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith(("claude_proxy", "uvicorn", "starlette"))


@pytest.fixture
def unreachable() -> Iterator[Callable[[], Counter[str]]]:
    """`unreachable()`: the types of the proxy's and the server's objects that only a collection could free, of all
    made since the fixture began."""
    gc.collect()
    gc.disable()
    try:

        def collect() -> Counter[str]:
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                gc.collect()
                return Counter(type(obj).__qualname__ for obj in gc.garbage if _ours(obj))
            finally:
                gc.set_debug(0)
                gc.garbage.clear()

        yield collect
    finally:
        gc.enable()


def test_no_request_leaves_a_reference_cycle(
    fake: FakeAnthropic, proxy: ProxyFactory, unreachable: Callable[[], Counter[str]]
) -> None:
    fake.default = lambda _record: message(text("Hi there!"))
    url = proxy(_full_server=True)
    chat = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}
    with httpx.Client(base_url=url, timeout=20) as http:
        unreachable()  # the app's start-up and first imports are not what is measured
        for _ in range(ROUNDS):
            assert http.post("/v1/chat/completions", json=chat).status_code == 200
            with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as streamed:
                assert streamed.status_code == 200
                assert "data: [DONE]" in streamed.read().decode()
            answered = http.post("/v1/responses", json={"model": "claude-sonnet-4-6", "input": "Hello"})
            assert answered.status_code == 200
            assert http.post("/v1/chat/completions", json={"messages": []}).status_code == 400
            assert http.get("/v1/models").status_code == 200
            assert http.get("/health").status_code == 200
        left = unreachable()
    assert not left, f"objects in reference cycles after {ROUNDS} rounds of requests: {dict(left)}"


def test_the_check_sees_a_cycle_when_there_is_one(unreachable: Callable[[], Counter[str]]) -> None:
    cycle: dict[str, object] = {}
    cycle["state"] = State({"cycle": cycle})  # a dict and the proxy's kind of object, each holding the other
    del cycle
    assert unreachable() == Counter({"State": 1})


def test_failing_requests_leave_no_reference_cycle(
    fake: FakeAnthropic, proxy: ProxyFactory, unreachable: Callable[[], Counter[str]]
) -> None:
    fake.default = lambda _record: ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"})
    url = proxy(_full_server=True, PROXY_API_KEYS="inbound-key-of-the-test")
    chat = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}
    key = {"authorization": "Bearer inbound-key-of-the-test"}
    with httpx.Client(base_url=url, timeout=20) as http:
        unreachable()
        for _ in range(ROUNDS):
            assert http.post("/v1/chat/completions", json=chat, headers=key).status_code == 503
            streamed = http.post("/v1/chat/completions", json={**chat, "stream": True}, headers=key)
            assert streamed.status_code == 503
            assert http.post("/v1/messages", json={**chat, "max_tokens": 5}, headers=key).status_code == 529
            assert http.post("/v1/chat/completions", json=chat).status_code == 401
            broken = http.post(
                "/v1/chat/completions", content=b"{", headers={**key, "content-type": "application/json"}
            )
            assert broken.status_code == 400
            assert http.get("/v1/nowhere", headers=key).status_code == 404
        left = unreachable()
    assert not left, f"objects in reference cycles after {ROUNDS} rounds of failing requests: {dict(left)}"


def test_a_client_that_leaves_a_stream_leaves_no_reference_cycle(
    fake: FakeAnthropic, proxy: ProxyFactory, unreachable: Callable[[], Counter[str]]
) -> None:
    fake.default = lambda _record: message(text("word " * 50))
    fake.stream_delay = 0.01
    url = proxy(_full_server=True)
    chat = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}], "stream": True}
    with httpx.Client(base_url=url, timeout=20) as http:
        unreachable()
        for _ in range(ROUNDS):
            with http.stream("POST", "/v1/chat/completions", json=chat) as streamed:
                assert streamed.status_code == 200
                next(streamed.iter_bytes())  # the first chunk, then the client is gone
        deadline = time.monotonic() + 10
        while fake.disconnects < ROUNDS and time.monotonic() < deadline:  # the proxy has closed each upstream stream
            time.sleep(0.02)
        assert fake.disconnects == ROUNDS
        time.sleep(0.2)  # and has finished each request after closing its upstream stream
        left = unreachable()
    assert not left, f"objects in reference cycles after {ROUNDS} abandoned streams: {dict(left)}"
