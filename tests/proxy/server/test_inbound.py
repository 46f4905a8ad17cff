"""The checks made of a request's headers before its body: a POST must say its body is JSON (415 otherwise, in the
route's own envelope, before the key check and before anything reaches Anthropic), so a web page cannot drive the
proxy with a request a browser sends without asking first; and without keys, a request that came in on the loopback
must be addressed to this machine (`Host`), so a page whose name points at 127.0.0.1 (DNS rebinding) cannot either."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from claude_proxy.errors import ProxyError
from claude_proxy.server.inbound import RequestHeaders, json_media_type, local_host_header, require_local_host
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
    """What a page's cross-site "simple" request looks like (its `Origin`, a `Host` of this machine's)."""
    url = proxy()
    headers = {"origin": "http://attacker.example", "host": "localhost"}
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


@pytest.mark.parametrize(
    ("host", "local"),
    [
        (None, True),
        (b"localhost", True),
        (b"localhost:8080", True),
        (b"LocalHost:8080", True),
        (b"app.localhost:8080", True),
        (b"127.0.0.1:8080", True),
        (b"192.0.2.7", True),
        (b"[::1]:8080", True),
        (b"attacker.example", False),
        (b"attacker.example:8080", False),
        (b"localhost.attacker.example", False),
        (b"127.0.0.1.nip.io:8080", False),
        (b"proxy.internal", False),
    ],
)
def test_host_headers_of_this_machine(host: bytes | None, local: bool) -> None:
    assert local_host_header(host) is local


# What a page on a name the attacker rebinds to 127.0.0.1 sends: same-origin as far as the browser knows, so JSON
# (or any type, preflight or not), with its own name as Host.
REBINDING = {"host": "rebound.attacker.example:8080", "origin": "http://rebound.attacker.example:8080"}


@pytest.mark.parametrize("path", sorted(POSTS))
def test_without_keys_a_request_for_another_name_is_a_403_that_never_reaches_anthropic(
    fake: FakeAnthropic, proxy: ProxyFactory, path: str
) -> None:
    url = proxy()
    answer = httpx.post(f"{url}{path}", json=POSTS[path], headers=REBINDING)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["type"] == "permission_error" and "PROXY_API_KEYS" in error["message"]
    assert fake.requests == []
    listed = httpx.get(f"{url}/v1/models", headers=REBINDING)
    assert listed.status_code == 403 and listed.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "app.localhost"])
def test_without_keys_this_machine_s_names_are_served(fake: FakeAnthropic, proxy: ProxyFactory, host: str) -> None:
    fake.script(message(text("hello")))
    url = proxy()
    port = url.rsplit(":", 1)[1]
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"host": f"{host}:{port}"})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "hello"


def test_with_keys_any_name_is_served_to_a_keyed_client(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("hello")))
    url = proxy(PROXY_API_KEYS=INBOUND)
    headers = {"host": "proxy.internal:8080", "authorization": f"Bearer {INBOUND}"}
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers)
    assert answer.status_code == 200
    refused = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=REBINDING)
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("server", "refused"),
    [(("127.0.0.1", 8080), True), (("::1", 8080), True), (("10.1.2.3", 8080), False), (None, False)],
)
def test_only_a_connection_on_the_loopback_is_held_to_this_machine_s_names(
    server: tuple[str, int] | None, refused: bool
) -> None:
    """A connection on another address (a pod's, HOST=0.0.0.0 behind a NetworkPolicy) came from elsewhere anyway:
    its clients use the names of the network (a Service's), not this machine's."""
    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [(b"host", b"proxy.internal")]}
    if server is not None:
        scope["server"] = server
    request = Request(scope)
    if refused:
        with pytest.raises(ProxyError) as info:
            require_local_host(request, RequestHeaders(scope["headers"]))
        assert info.value.status == 403
    else:
        require_local_host(request, RequestHeaders(scope["headers"]))
