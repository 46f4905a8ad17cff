"""The checks made of a request's headers before its body: a POST must say its body is JSON (415 otherwise, in the
route's own envelope, before the key check and before anything reaches Anthropic), so a web page cannot drive the
proxy with a request a browser sends without asking first."""

from __future__ import annotations

import httpx
import pytest

from claude_proxy.server.inbound import json_media_type
from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text

INBOUND = "inbound-key-of-the-inbound-test"
CHAT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
POSTS = {
    "/v1/chat/completions": CHAT,
    "/chat/completions": CHAT,
    "/v1/responses": {"model": "claude-sonnet-4-6", "input": "hi"},
    "/responses": {"model": "claude-sonnet-4-6", "input": "hi"},
    "/v1/messages": {**CHAT, "max_tokens": 5},
    "/v1/messages/count_tokens": CHAT,
}


@pytest.mark.parametrize(
    ("value", "json"),
    [
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"Application/JSON ;charset=UTF-8", True),
        (b"application/vnd.api+json", True),
        (b"application/merge-patch+json; charset=utf-8", True),
        (None, False),
        (b"", False),
        (b"text/plain", False),
        (b"text/plain; charset=utf-8", False),
        (b"application/x-www-form-urlencoded", False),
        (b"multipart/form-data; boundary=x", False),
        (b"text/json", False),
        (b"application/jsonp", False),
        (b"application", False),
    ],
)
def test_json_media_types(value: bytes | None, json: bool) -> None:
    assert json_media_type(value) is json


@pytest.mark.parametrize("path", sorted(POSTS))
@pytest.mark.parametrize(
    "content_type", [None, "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; b=x"]
)
def test_a_post_not_said_to_be_json_is_a_415_that_never_reaches_anthropic(
    fake: FakeAnthropic, proxy: ProxyFactory, path: str, content_type: str | None
) -> None:
    """What a page's cross-site "simple" request looks like (its `Origin` and any `Host`), key or none."""
    url = proxy()
    headers = {"origin": "http://attacker.example", "host": "attacker.example"}
    if content_type is not None:
        headers["content-type"] = content_type
    answer = httpx.post(f"{url}{path}", content=httpx.Request("POST", url, json=POSTS[path]).read(), headers=headers)
    assert answer.status_code == 415
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Unsupported Content-Type: send the request body as JSON")
    if path.startswith("/v1/messages"):  # Anthropic's envelope on Anthropic's routes
        assert answer.json()["type"] == "error"
    else:
        assert error["code"] == "unsupported_media_type"
    assert fake.requests == []


def test_the_415_comes_before_the_key_check(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS=INBOUND)
    answer = httpx.post(f"{url}/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    keyed = {"authorization": f"Bearer {INBOUND}", "content-type": "text/plain"}
    assert httpx.post(f"{url}/v1/chat/completions", content=b"{}", headers=keyed).status_code == 415


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "x/y+json"])
def test_json_posts_are_served(fake: FakeAnthropic, proxy: ProxyFactory, content_type: str) -> None:
    fake.script(message(text("hello")))
    url = proxy(PROXY_API_KEYS=INBOUND)
    body = httpx.Request("POST", url, json=CHAT).read()
    headers = {"authorization": f"Bearer {INBOUND}", "content-type": content_type}
    answer = httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers)
    if content_type == "x/y+json":  # +json only under application/
        assert answer.status_code == 415
        return
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "hello"


def test_gets_need_no_content_type(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    assert httpx.get(f"{url}/v1/models").status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200
