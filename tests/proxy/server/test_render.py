"""The errors a client sees say what happened: which upstream could not be reached, that a 401 is about the proxy's own
credential, how to find a model name Anthropic does not know, which endpoints exist, and the whole OpenAI envelope on
every one. Real uvicorn, the fake Anthropic API, and the official openai SDK as the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from tests.conftest import API_KEY, ProxyFactory, serve
from tests.fakes.anthropic import FakeAnthropic
from tests.proxy.http_support import client, connect, read_response, socket_closed_port

MESSAGES = [{"role": "user", "content": "x"}]
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def test_an_unreachable_upstream_is_named_in_the_error(proxy: ProxyFactory) -> None:
    with socket_closed_port() as port:
        upstream = f"http://127.0.0.1:{port}"
        c = client(proxy(ANTHROPIC_BASE_URL=upstream, PROXY_MAX_RETRIES="0"))
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as info:
                c.chat.completions.create(model="claude-sonnet-4-6", messages=MESSAGES, stream=stream)
            assert info.value.status_code == 502
            assert f"Anthropic API at {upstream} is unreachable" in info.value.message
            assert "ANTHROPIC_BASE_URL" in info.value.message


def test_a_401_from_anthropic_says_it_refused_the_proxys_own_credential_with_a_403(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    c = client(proxy(ANTHROPIC_API_KEY="sk-ant-api03-revoked"), key="the-clients-own-key")
    with pytest.raises(openai.PermissionDeniedError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=MESSAGES)
    message = info.value.message
    assert "refused the proxy's own upstream credential" in message
    assert "not a fault of this request or of its API key" in message
    assert "invalid x-api-key" in message  # Anthropic's own words are kept
    assert "sk-ant-api03-revoked" not in message and "the-clients-own-key" not in message
    assert [r.headers["x-api-key"] for r in fake.messages_requests] == ["sk-ant-api03-revoked"]


@pytest.fixture
def strict_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_keys=(API_KEY,), known_models_only=True) as server:
        yield server


def test_an_unknown_model_points_at_the_model_list_and_the_aliases(strict_fake: FakeAnthropic, tmp_path: Path) -> None:
    env = {"ANTHROPIC_BASE_URL": strict_fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)}
    with serve(create_app(Settings.from_env(env))) as url:
        c = client(url)
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as info:
                c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=stream)
            err = info.value
            assert err.code == "model_not_found" and err.param == "model"
            assert "model: gpt-4o" in err.message
            assert "GET /v1/models" in err.message and "PROXY_MODEL_ALIASES" in err.message
    # the hint is the way out: with the alias it names, the same request is answered
    aliased = Settings.from_env({**env, "PROXY_MODEL_ALIASES": "gpt-4o=claude-sonnet-4-6"})
    with serve(create_app(aliased)) as url:
        answer = client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content
    assert strict_fake.messages_requests[-1].body["model"] == "claude-sonnet-4-6"


def test_an_unknown_route_is_a_404_envelope_naming_the_endpoints(proxy: ProxyFactory) -> None:
    url = proxy()
    with pytest.raises(openai.NotFoundError) as info:
        client(url).embeddings.create(model="claude-sonnet-4-6", input="x")
    assert "Invalid URL (POST /v1/embeddings)" in info.value.message
    response = httpx.get(f"{url}/v2/whatever")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == ENVELOPE_KEYS and error["type"] == "invalid_request_error" and error["code"] == "unknown_url"
    for endpoint in ("POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models", "GET /v1/models/{model}"):
        assert endpoint in error["message"]
    assert "{model:path}" not in error["message"]


def test_both_408s_carry_the_whole_openai_envelope(proxy: ProxyFactory) -> None:
    url = proxy(_full_server=True, PROXY_HEADER_TIMEOUT="0.3", PROXY_BODY_TIMEOUT="0.3")
    with connect(url) as sock:  # says nothing: the server's own 408
        status, headers, body = read_response(sock)
    assert status == 408 and headers["content-type"] == "application/json"
    head_error = json.loads(body)["error"]
    with connect(url) as sock:  # a head, and a body that stalls: the app's 408
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 50\r\n\r\n{"
        )
        status, _, body = read_response(sock)
    assert status == 408
    body_error = json.loads(body)["error"]
    assert set(head_error) == set(body_error) == ENVELOPE_KEYS
    assert head_error["code"] == body_error["code"] == "request_timeout"
    assert head_error["type"] == body_error["type"] == "invalid_request_error"
    assert "PROXY_HEADER_TIMEOUT" in head_error["message"] and "PROXY_BODY_TIMEOUT" in body_error["message"]
