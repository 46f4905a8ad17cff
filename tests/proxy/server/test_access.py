"""The access edge through the real app and server: one access log line per request with its ids, model and tokens,
errors logged with their type, and an exception nothing answered turned into a 500 envelope with a request id."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.logs import ACCESS_LOGGER, JSONFormatter, PlainFormatter
from tests.conftest import API_KEY, ProxyFactory, metric_samples, serve
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text, tool_use
from tests.proxy.server.access_support import MODEL, USAGE, access_records, eventually


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
    assert response.status_code == 503  # Anthropic's 529, as OpenAI clients see it
    line = eventually(lambda: access_records(caplog)[-1])
    assert line["status"] == 503 and line["error"] == "overloaded_error"
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
