"""Metrics, and what metrics, logs and probes must never show: through the real app and server. The access log and
the request id are tested in test_access.py."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from claude_proxy.server.logs import JSONFormatter, PlainFormatter
from claude_proxy.server.metrics import MAX_MODELS
from tests.conftest import ProxyFactory, metric_samples
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text
from tests.proxy.lifecycle_support import now_ms, write_credentials
from tests.proxy.server.access_support import MODEL, USAGE, eventually


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


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


def test_only_models_anthropic_answered_for_become_labels(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.known_models_only = True  # Anthropic's 404 for a model it does not know
    url = proxy()
    ask = [{"role": "user", "content": "x"}]
    for i in range(MAX_MODELS + 5):  # more names than there are label slots, none of them a model
        junk = f"junk-{i}" if i % 2 else f"junk-{i}\n" + "z" * 10_000
        answer = httpx.post(f"{url}/v1/chat/completions", json={"model": junk, "messages": ask})
        assert answer.status_code == 404
    fake.script(message(text("yes"), usage=USAGE))
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": ask}).status_code == 200
    m = metric_samples(url)
    models = {key.split('model="')[1].split('"')[0] for key in m if 'model="' in key}
    assert models == {"other", MODEL}  # the junk counted, under `other`; the accepted model kept its slot
    assert m['proxy_requests_total{model="other",route="/v1/chat/completions",status="404"}'] == MAX_MODELS + 5
    assert m[f'proxy_requests_total{{model="{MODEL}",route="/v1/chat/completions",status="200"}}'] == 1


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
    with pytest.raises(openai.PermissionDeniedError):
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
