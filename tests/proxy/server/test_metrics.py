"""Metrics, the access log and the request id, and what they must never show: through the real app and server."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.logs import ACCESS_LOGGER, JSONFormatter, PlainFormatter
from claude_proxy.server.metrics import MAX_MODELS
from tests.conftest import API_KEY, ProxyFactory, metric_samples, serve
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text, tool_use
from tests.proxy.lifecycle_support import now_ms, write_credentials

MODEL = "claude-sonnet-4-6"
USAGE = {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 40}


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def eventually(check: Any, timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]


def test_metrics_count_requests_tokens_latency_and_expiry(
    fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.json"
    write_credentials(creds, "sk-ant-oat01-test-m", "sk-ant-ort01-test-m", now_ms() + 3_600_000)
    fake.oauth_tokens = {"sk-ant-oat01-test-m"}
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))
    c = client(url)
    fake.script(message(text("one"), usage=USAGE), message(text("two"), usage=USAGE))
    c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}])
    list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "b"}], stream=True))
    fake.script(ErrorReply(400, "invalid_request_error", "bad"))
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "c"}])
    httpx.get(f"{url}/no/such/route")

    def check() -> dict[str, float]:
        m = metric_samples(url)
        assert m[f'proxy_requests_total{{model="{MODEL}",route="/v1/chat/completions",status="200"}}'] == 2
        return m

    m = eventually(check)
    assert m[f'proxy_requests_total{{model="{MODEL}",route="/v1/chat/completions",status="400"}}'] == 1
    assert m['proxy_requests_total{model="",route="unmatched",status="404"}'] == 1
    for kind, per_request in (("input", 11), ("output", 5), ("cache_read", 100), ("cache_write", 40)):
        assert m[f'proxy_tokens_total{{kind="{kind}",model="{MODEL}"}}'] == 2 * per_request
    assert m["proxy_time_to_first_token_seconds_count"] == 1
    assert m['proxy_upstream_latency_seconds_count{stream="false"}'] == 2
    assert m['proxy_upstream_latency_seconds_count{stream="true"}'] == 1
    assert m['proxy_upstream_requests_total{status="200"}'] == 2
    assert m['proxy_request_duration_seconds_count{route="/v1/chat/completions"}'] == 3
    expiry = m['proxy_oauth_token_expiry_seconds{credential="oauth_file"}']
    assert 3500 < expiry <= 3600
    assert m["proxy_upstream_inflight"] == 0 and m["proxy_upstream_queued"] == 0 and m["proxy_draining"] == 0


def test_model_label_values_are_bounded(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    for i in range(MAX_MODELS + 5):
        httpx.post(
            f"{url}/v1/chat/completions", json={"model": f"m{i}", "messages": [{"role": "user", "content": "x"}]}
        )
    m = metric_samples(url)
    labelled = {k for k in m if k.startswith("proxy_requests_total{")}
    assert len(labelled) == MAX_MODELS + 1
    assert m['proxy_requests_total{model="other",route="/v1/chat/completions",status="200"}'] == 5


def test_client_disconnects_are_counted(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()

    def slow(record: Any) -> dict[str, Any]:
        time.sleep(0.6)
        return message(text("late"))

    fake.script(slow)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            timeout=0.2,
        )
    eventually(lambda: _assert_equal(metric_samples(url).get("proxy_client_disconnects_total"), 1.0))


def _assert_equal(a: Any, b: Any) -> None:
    assert a == b


def test_access_log_one_line_per_request_with_ids_and_tokens(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    url = proxy()
    fake.script(message(text("hi"), usage=USAGE), message(tool_use("toolu_1", "f", {}), usage=USAGE))
    plain = httpx.post(
        f"{url}/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True, "tools": tools}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as streamed:
        streamed.read()
    health = httpx.get(f"{url}/health")

    def check() -> list[dict[str, Any]]:
        lines = [a for a in access_records(caplog) if a["path"] != "/metrics"]
        assert len(lines) == 3
        return lines

    first, second, third = eventually(check)
    assert first["request_id"] == plain.headers["x-request-id"] and first["request_id"].startswith("req_")
    assert second["request_id"] == streamed.headers["x-request-id"] != first["request_id"]
    assert third["request_id"] == health.headers["x-request-id"]
    assert first["upstream_request_id"] == plain.headers["x-upstream-request-id"]
    assert first["upstream_request_id"].startswith("req_fake")
    assert second["upstream_request_id"].startswith("req_fake") and second["stream"] is True
    for line in (first, second):
        assert (line["status"], line["model"], line["input_tokens"], line["output_tokens"]) == (200, MODEL, 11, 5)
        assert (line["cache_read_tokens"], line["cache_write_tokens"], line["error"]) == (100, 40, None)
    assert third["route"] == "/health" and third["model"] is None
    # both formats render every field on one line
    record = next(r for r in caplog.records if r.name == ACCESS_LOGGER)
    rendered = json.loads(JSONFormatter().format(record))
    assert rendered["request_id"] == first["request_id"] and rendered["level"] == "info"
    line = PlainFormatter().format(record)
    assert "\n" not in line and first["request_id"] in line and "POST /v1/chat/completions 200" in line


def test_errors_are_logged_with_their_type(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    url = proxy(PROXY_MAX_RETRIES="0")
    fake.script(ErrorReply(529, "overloaded_error", "Overloaded"))
    response = httpx.post(
        f"{url}/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 529
    line = eventually(lambda: access_records(caplog)[-1])
    assert line["status"] == 529 and line["error"] == "overloaded_error"
    assert line["upstream_request_id"] == response.headers["x-upstream-request-id"]


def test_unhandled_exception_is_a_500_envelope_with_a_request_id(
    fake: FakeAnthropic, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = create_app(
        Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    )
    add_failing_route(app)
    with serve(app) as url:
        response = httpx.get(f"{url}/boom")
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "internal error in the proxy",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        assert response.headers["x-request-id"].startswith("req_")
        assert metric_samples(url)['proxy_requests_total{model="",route="/boom",status="500"}'] == 1
    assert any("unhandled RuntimeError" in r.getMessage() for r in caplog.records)


def add_failing_route(app: FastAPI) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)


def test_readyz_turns_unready_at_once_when_draining(fake: FakeAnthropic, tmp_path: Path) -> None:
    app = create_app(
        Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    )
    with serve(app) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        app.state.drain.begin()
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "the proxy is shutting down"
        assert httpx.get(f"{url}/health").status_code == 200  # still alive: in-flight work continues
        assert metric_samples(url)["proxy_draining"] == 1


# ---- security ------------------------------------------------------------------------------------------------------


def test_no_secret_reaches_logs_metrics_or_probes(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    token = "sk-ant-oat01-test-secret"
    refresh_token = "sk-ant-ort01-test-secret"
    inbound = "inbound-test-key-1"
    prompt = "PROMPT-TEXT-never-logged"
    creds = tmp_path / "creds.json"
    write_credentials(creds, token, refresh_token, now_ms() + 3_600_000)
    fake.oauth_tokens = {token}
    caplog.set_level(logging.DEBUG)  # everything, every logger
    url = proxy(
        ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds), PROXY_API_KEYS=inbound, PROXY_MAX_RETRIES="1"
    )
    ask = [{"role": "user", "content": prompt}]
    c = client(url, inbound)
    c.chat.completions.create(model=MODEL, messages=ask)
    list(c.chat.completions.create(model=MODEL, messages=ask, stream=True))
    with pytest.raises(openai.AuthenticationError) as info:  # a wrong inbound key
        client(url, "wrong-key-PRESENTED").chat.completions.create(model=MODEL, messages=ask)
    assert info.value.status_code == 401 and info.value.body["type"] == "authentication_error"  # type: ignore[index]
    fake.script(ErrorReply(500, "api_error", "boom"), ErrorReply(500, "api_error", "boom"))
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model=MODEL, messages=ask)
    fake.oauth_tokens = set()  # the upstream now refuses the token
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model=MODEL, messages=ask, stream=True)
    # client-supplied credentials are never forwarded: only the proxy's own token goes upstream
    httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": MODEL, "messages": ask},
        headers={"authorization": f"Bearer {inbound}", "x-api-key": "sk-ant-api03-test-client"},
    )
    for sent in fake.messages_requests:
        assert sent.headers["authorization"] == f"Bearer {token}"
        assert "x-api-key" not in sent.headers
        assert inbound not in json.dumps(sent.headers)

    texts = [httpx.get(f"{url}{path}").text for path in ("/metrics", "/health", "/readyz")]
    assert len(caplog.records) > 10
    for record in caplog.records:
        texts += [JSONFormatter().format(record), PlainFormatter().format(record), record.getMessage()]
    for value in texts:
        for secret in (token, refresh_token, inbound, "wrong-key-PRESENTED", "sk-ant-api03-test-client", prompt):
            assert secret not in value
        assert "sk-ant-o" not in value
