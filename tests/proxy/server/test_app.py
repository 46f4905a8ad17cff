"""The app's edge: the chat route as a plain ASGI handler under the router, with what every route has (405s, a
mounted prefix, the request id and the route label on every answer)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.logs import ACCESS_LOGGER
from tests.conftest import API_KEY, ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text

INBOUND = "sk-proxy-edge-test-key"
JSON = {"content-type": "application/json"}


def settings(fake: FakeAnthropic, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "PROXY_API_KEYS": INBOUND, "HOME": str(tmp_path)}
    )


def test_chat_route_answers_through_the_direct_path_with_id_and_route_label(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    fake.script(message(text("hi there")))
    url = proxy(PROXY_API_KEYS=INBOUND)
    answer = openai.OpenAI(base_url=f"{url}/v1", api_key=INBOUND, max_retries=0).chat.completions.with_raw_response
    raw = answer.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}])
    assert raw.parse().choices[0].message.content == "hi there"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-upstream-request-id"]
    assert raw.headers["content-type"] == "application/json"
    # the unprefixed alias is served the same way
    bare = httpx.post(
        f"{url}/chat/completions",
        headers={"authorization": f"Bearer {INBOUND}", "content-type": "application/json"},
        content=b"[1]",
    )
    assert bare.status_code == 400 and bare.json()["error"]["message"] == "request body must be a JSON object"
    records = [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert [(r["route"], r["status"]) for r in records] == [("/v1/chat/completions", 200), ("/chat/completions", 400)]
    assert records[0]["request_id"] == raw.headers["x-request-id"]


def test_other_methods_on_the_chat_route_are_a_405_envelope(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    answer = httpx.get(f"{proxy(PROXY_API_KEYS=INBOUND)}/v1/chat/completions")
    assert answer.status_code == 405
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.headers["x-request-id"].startswith("req_")
    assert fake.requests == []


def test_a_mounted_prefix_still_reaches_the_chat_route(fake: FakeAnthropic, tmp_path: Path) -> None:
    """Behind a prefix (`root_path`) the router strips the prefix and serves the same handler: the same key check
    and the same body errors."""
    with TestClient(create_app(settings(fake, tmp_path)), root_path="/api", base_url="http://proxy") as http:
        refused = http.post("/api/v1/chat/completions", json={})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        broken = http.post(
            "/api/v1/chat/completions", content=b"{not json", headers={"authorization": f"Bearer {INBOUND}", **JSON}
        )
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
        assert broken.headers["x-request-id"].startswith("req_")


def test_the_app_puts_the_servers_send_in_each_http_scope(fake: FakeAnthropic, tmp_path: Path) -> None:
    """What `SSEResponse` relies on, through the app as served (a streamed answer still gets the access
    middleware's request id: its head went through the middleware)."""
    fake.script(message(text("streamed")))
    with TestClient(create_app(settings(fake, tmp_path)), base_url="http://proxy") as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "claude-sonnet-4-6", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {INBOUND}"},
        ) as answer:
            lines = [line for line in answer.iter_lines() if line]
        assert answer.status_code == 200 and answer.headers["x-request-id"].startswith("req_")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "streamed"


@pytest.mark.parametrize("path", ["/health/", "/v1/chat/completions/", "/readyz/"])
def test_a_trailing_slash_is_a_404_never_a_redirect_built_from_host(proxy: ProxyFactory, path: str) -> None:
    url = proxy()
    answer = httpx.get(f"{url}{path}", headers={"host": "attacker.example"}, follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers
    assert answer.json()["error"]["code"] == "unknown_url"
    posted = httpx.post(f"{url}{path}", json={}, headers={"host": "attacker.example"}, follow_redirects=False)
    assert posted.status_code in (404, 405) and "location" not in posted.headers
