"""End to end: the official anthropic SDK -> /v1/messages on the app under uvicorn -> the strict fake Anthropic.

The proxy passes Anthropic's own API through with its managed credential: the fake checks what arrived (the
proxy's key or OAuth token, never the client's), the SDK checks what came back (its own parsing and stream
accumulation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY, OAUTH_TOKEN, ProxyFactory, metric_samples
from tests.fakes.anthropic import RESET, ErrorReply, FakeAnthropic, message, render_sse, text, tool_use

CLIENT_KEY = "client-inbound-key-1"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def client(url: str, key: str = CLIENT_KEY, **kwargs: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=20, **kwargs)  # type: ignore[arg-type]


def oauth_proxy(proxy: ProxyFactory, tmp_path: Path, **env: str) -> str:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"claudeAiOauth": {"accessToken": OAUTH_TOKEN, "expiresAt": 4102444800000}}))
    return proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(path), **env)


def test_create_with_the_proxy_credential_not_the_client_key(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("Hello back"), usage={"input_tokens": 11, "output_tokens": 4}))
    url = proxy(PROXY_API_KEYS=CLIENT_KEY)
    out = client(url).messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
    )
    assert out.content[0].type == "text" and out.content[0].text == "Hello back"
    assert out.usage.input_tokens == 11
    sent = fake.messages_requests[-1]
    assert sent.headers["x-api-key"] == API_KEY
    assert CLIENT_KEY not in json.dumps(sent.headers)
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == client(url).default_headers["anthropic-version"]  # the client's
    assert sent.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    samples = metric_samples(url)
    assert samples['proxy_requests_total{model="claude-sonnet-4-6",route="/v1/messages",status="200"}'] == 1
    assert samples['proxy_tokens_total{kind="input",model="claude-sonnet-4-6"}'] == 11


def test_inbound_key_enforced_as_x_api_key_or_bearer(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS=CLIENT_KEY)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(url, key="wrong").messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    bare = httpx.post(f"{url}/v1/messages", json={"model": "m", "max_tokens": 1, "messages": []})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert not fake.messages_requests  # nothing reached Anthropic
    bearer = anthropic.Anthropic(base_url=url, auth_token=CLIENT_KEY, max_retries=0)
    out = bearer.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert out.content[0].type == "text"
    assert fake.messages_requests[-1].headers["x-api-key"] == API_KEY
    assert CLIENT_KEY not in json.dumps(fake.messages_requests[-1].headers)


def test_stream_accumulated_by_the_sdk(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("Streaming along nicely"), usage={"input_tokens": 9, "output_tokens": 5}))
    url = proxy()
    with client(url).messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Streaming along nicely"
    assert len(pieces) > 1  # the fake splits text into several deltas; they arrive as such
    assert final.content[0].type == "text" and final.content[0].text == "Streaming along nicely"
    assert final.stop_reason == "end_turn"
    assert fake.messages_requests[-1].body["stream"] is True
    samples = metric_samples(url)
    assert samples['proxy_tokens_total{kind="output",model="claude-sonnet-4-6"}'] == 5


def test_stream_relayed_byte_for_byte(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    start = {"type": "message_start", "message": message(model="claude-sonnet-4-6") | {"content": []}}
    raw = (
        b"event: message_start\r\ndata: "
        + json.dumps(start).encode()
        + b'\r\n\r\n: a comment\n\nevent: ping\ndata: {"type": "ping"}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\xc3\xa9t\xc3\xa9"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake.script({"_events": [raw[:37], raw[37:200], raw[200:]]})
    url = proxy()
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream("POST", f"{url}/v1/messages", json=body, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = b"".join(response.iter_raw())
    assert received == raw


def test_count_tokens(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS=CLIENT_KEY)
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    out = client(url).messages.count_tokens(model="claude-sonnet-4-6", messages=messages)  # type: ignore[arg-type]
    assert out.input_tokens == 1 + len(json.dumps(messages)) // 4
    sent = [r for r in fake.requests if r.path == "/v1/messages/count_tokens"][-1]
    assert sent.headers["x-api-key"] == API_KEY and CLIENT_KEY not in json.dumps(sent.headers)
    assert sent.body == {"model": "claude-sonnet-4-6", "messages": messages}


def test_tool_use_round_trip(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        message(tool_use("toolu_01", "get_weather", {"city": "Paris"}), stop_reason="tool_use"),
        message(text("It is sunny in Paris.")),
    )
    sdk = client(proxy())
    first = sdk.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]},
    ]
    second = sdk.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=history,
    )
    assert second.content[0].type == "text" and second.content[0].text == "It is sunny in Paris."
    assert fake.messages_requests[-1].body["messages"][2]["content"][0]["tool_use_id"] == "toolu_01"


def test_oauth_beta_merged_into_the_client_betas(fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path) -> None:
    url = oauth_proxy(proxy, tmp_path)
    sdk = client(url, default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    out = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert out.content[0].type == "text"
    sent = fake.messages_requests[-1]
    assert sent.headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert "x-api-key" not in sent.headers
    betas = [b.strip() for b in sent.headers["anthropic-beta"].split(",")]
    assert "oauth-2025-04-20" in betas and "interleaved-thinking-2025-05-14" in betas
    with sdk.messages.stream(
        model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as s:
        assert s.get_final_message().content[0].type == "text"
    assert "oauth-2025-04-20" in fake.messages_requests[-1].headers["anthropic-beta"]


@pytest.mark.parametrize("status,etype", [(429, "rate_limit_error"), (529, "overloaded_error")])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_refusal_retried_before_the_first_byte(
    fake: FakeAnthropic, proxy: ProxyFactory, status: int, etype: str, stream: bool
) -> None:
    fake.script(ErrorReply(status, etype, "busy", headers={"retry-after": "0"}), message(text("after the retry")))
    sdk = client(proxy())
    final: anthropic.types.Message
    if stream:
        with sdk.messages.stream(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as s:
            final = s.get_final_message()
    else:
        final = sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert final.content[0].type == "text" and final.content[0].text == "after the retry"
    assert len(fake.messages_requests) == 2


def test_stream_that_begins_with_overloaded_is_retried(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    fake.script({"_events": [b"event: ping\ndata: {}\n\n", error]}, message(text("second try")))
    with client(proxy()).messages.stream(
        model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as s:
        assert s.get_final_message().content[0].text == "second try"  # type: ignore[union-attr]
    assert len(fake.messages_requests) == 2


def test_upstream_errors_relayed_unchanged(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_MAX_RETRIES="0")
    response = httpx.post(f"{url}/v1/messages", json={"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": []})
    # the fake's own validation answers first here: what it said is what the client gets, byte for byte
    assert response.status_code == 400
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["request-id"].startswith("req_fake")
    fake.script(ErrorReply(429, "rate_limit_error", "slow down", headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(url).messages.create(
            model="claude-sonnet-4-6", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["error"]["message"] == "slow down"  # type: ignore[index]


def test_proxy_errors_in_anthropic_envelope(fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path) -> None:
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(tmp_path / "absent.json"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(url).messages.create(
            model="claude-sonnet-4-6", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    down = proxy(ANTHROPIC_BASE_URL="http://127.0.0.1:9", PROXY_MAX_RETRIES="0")
    with pytest.raises(anthropic.APIStatusError) as unreachable:
        client(down).messages.create(
            model="claude-sonnet-4-6", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert unreachable.value.status_code == 502
    assert unreachable.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# ---- the stream relay, passing through ----------------------------------------------------------------------------

STREAM_BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 10,
    "stream": True,
    "messages": [{"role": "user", "content": "x"}],
}
OVERLOADED = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'


def raw_stream(url: str) -> tuple[int, dict[str, str], bytes]:
    with httpx.stream("POST", f"{url}/v1/messages", json=STREAM_BODY, timeout=20) as response:
        return response.status_code, dict(response.headers), b"".join(response.iter_raw())


def test_connection_lost_mid_stream_ends_with_an_error_event(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    events = list(render_sse(message(text("partial answer"))))
    fake.script({**message(text("partial answer")), "_events": [*events[:-3], RESET]})
    url = proxy()
    status, _, body = raw_stream(url)
    assert status == 200
    assert body.startswith(b"".join(events[:-3]))  # Anthropic's events as they came
    last = body[len(b"".join(events[:-3])) :]
    assert last.startswith(b"event: error\ndata: ") and b"message_stop" not in body
    error = json.loads(last.removeprefix(b"event: error\ndata: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "connection to Anthropic lost mid-stream" in error["error"]["message"]
    assert len(fake.messages_requests) == 1  # output had begun: never repeated
    samples = metric_samples(url)
    assert samples['proxy_stream_errors_total{type="upstream_error"}'] == 1


def test_connection_lost_before_the_first_event_is_retried(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script({**message(text("x")), "_events": [RESET]}, message(text("second try")))
    with client(proxy()).messages.stream(
        model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as s:
        assert s.get_final_message().content[0].text == "second try"  # type: ignore[union-attr]
    assert len(fake.messages_requests) == 2


def test_out_of_retries_a_stream_beginning_with_an_error_goes_out_as_sent(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    fake.script({"_events": [OVERLOADED]}, {"_events": [b"event: ping\ndata: {}\n\n", OVERLOADED]})
    url = proxy(PROXY_MAX_RETRIES="1")
    status, headers, body = raw_stream(url)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body == b"event: ping\ndata: {}\n\n" + OVERLOADED  # the last attempt's stream, byte for byte
    assert len(fake.messages_requests) == 2
    assert metric_samples(url)['proxy_upstream_retries_total{reason="stream_error"}'] == 1


def test_a_stream_refused_with_an_http_error_is_answered_as_anthropic_answered(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    busy = ErrorReply(529, "overloaded_error", "busy", headers={"retry-after": "0"})
    fake.script(busy, busy)
    url = proxy(PROXY_MAX_RETRIES="1")
    status, headers, body = raw_stream(url)
    assert status == 529
    answer = json.loads(body)
    assert answer["type"] == "error" and answer["error"] == {"type": "overloaded_error", "message": "busy"}
    assert answer["request_id"] == headers["request-id"] == "req_fake0002"  # the last attempt's answer, as it was
    assert headers["retry-after"] == "0"
    assert headers["x-should-retry"] == "false"  # the proxy already retried
    assert len(fake.messages_requests) == 2
    fake.script(ErrorReply(400, "invalid_request_error", "no such thing"))
    status, headers, body = raw_stream(url)
    assert status == 400 and json.loads(body)["error"]["message"] == "no such thing"
    assert "x-should-retry" not in headers  # not retried: nothing to add


@pytest.mark.parametrize("etype", [b"invalid_request_error", b"some_future_error"])
def test_a_stream_beginning_with_an_error_of_no_retryable_type_goes_out_at_once(
    fake: FakeAnthropic, proxy: ProxyFactory, etype: bytes
) -> None:
    error = b'event: error\ndata: {"type":"error","error":{"type":"%s","message":"no"}}\n\n' % etype
    fake.script({"_events": [error]}, message(text("never asked for")))
    status, _, body = raw_stream(proxy())
    assert status == 200 and body == error
    assert len(fake.messages_requests) == 1
