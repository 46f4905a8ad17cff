"""Anthropic's rate-limit headers as the proxy shows them: gauges on /metrics after any upstream answer, and the
windows `claude-proxy check --usage` prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import openai
import pytest

from claude_proxy.upstream import ratelimits
from tests.conftest import API_KEY, OAUTH_TOKEN, ProxyFactory, metric_samples
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, ratelimit_headers
from tests.proxy.lifecycle_support import assert_no_secrets, cli_env, run_cli


def write_oauth(tmp_path: Path) -> Path:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"claudeAiOauth": {"accessToken": OAUTH_TOKEN, "expiresAt": 4102444800000}}))
    return path


def test_unified_windows_as_gauges_after_a_chat_completion(
    fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path
) -> None:
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(write_oauth(tmp_path)))
    assert not any(k.startswith("proxy_upstream_ratelimit") for k in metric_samples(url))  # nothing seen yet
    fake.response_headers = ratelimit_headers(unified=True)
    openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
    )
    samples = metric_samples(url)
    assert samples['proxy_upstream_ratelimit_unified_utilization{window="5h"}'] == pytest.approx(0.42)
    assert samples['proxy_upstream_ratelimit_unified_utilization{window="7d"}'] == pytest.approx(0.81)
    assert 3590 < samples['proxy_upstream_ratelimit_unified_reset_seconds{window="5h"}'] <= 3600
    assert samples['proxy_upstream_ratelimit_unified_status{status="allowed_warning",window="7d"}'] == 1
    assert samples['proxy_upstream_ratelimit_unified_status{status="rejected",window="overage"}'] == 1
    assert samples['proxy_upstream_ratelimit_unified_representative_claim{claim="five_hour"}'] == 1
    assert samples["proxy_upstream_ratelimit_unified_fallback_percentage"] == 0.5
    assert 0 <= samples["proxy_upstream_ratelimit_age_seconds"] < 30


@pytest.mark.parametrize("route", ["messages", "count_tokens"])
def test_console_limits_as_gauges_after_a_messages_call(fake: FakeAnthropic, proxy: ProxyFactory, route: str) -> None:
    fake.response_headers = ratelimit_headers(unified=False)
    url = proxy()
    sdk = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "x"}]
    if route == "messages":
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=messages)  # type: ignore[arg-type]
    else:
        sdk.messages.count_tokens(model="claude-sonnet-4-6", messages=messages)  # type: ignore[arg-type]
    samples = metric_samples(url)
    assert samples['proxy_upstream_ratelimit_limit{kind="requests"}'] == 4000
    assert samples['proxy_upstream_ratelimit_remaining{kind="requests"}'] == 3999
    assert samples['proxy_upstream_ratelimit_remaining{kind="output_tokens"}'] == 95000
    assert 0 < samples['proxy_upstream_ratelimit_reset_seconds{kind="tokens"}'] <= 60


def test_an_answer_without_the_headers_keeps_the_last_state(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.response_headers = ratelimit_headers(unified=False)
    url = proxy(PROXY_MAX_RETRIES="0")
    sdk = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
    sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    fake.response_headers = {}
    fake.script(ErrorReply(500, "api_error", "gateway trouble"))
    with pytest.raises(anthropic.InternalServerError):
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert metric_samples(url)['proxy_upstream_ratelimit_limit{kind="requests"}'] == 4000


def test_labels_come_from_fixed_sets() -> None:
    state = ratelimits.parse(
        {
            "anthropic-ratelimit-unified-status": "Something-New",
            "anthropic-ratelimit-unified-representative-claim": "ten_years",
            "anthropic-ratelimit-unified-5h-utilization": "not a number",
            "anthropic-ratelimit-unified-42y-utilization": "0.5",
            "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
        }
    )
    assert state.windows["overall"].status == "other"
    assert state.representative_claim == "other"
    assert set(state.windows) == {"overall"}  # an unknown window's header is not read, a bad number is dropped
    assert state.limits["requests"].reset == 1893456000.0


def test_check_usage_prints_the_subscription_windows(fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.response_headers = ratelimit_headers(unified=True)
    env = cli_env(tmp_path, ANTHROPIC_BASE_URL=fake.url, CLAUDE_CREDENTIALS_PATH=str(write_oauth(tmp_path)))
    result = run_cli("check", "--usage", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^window 5h: +allowed, 42\.0% used, resets in (59m5\ds|1h00m)$", result.stdout, re.M)
    assert re.search(r"^window 7d: +allowed_warning, 81\.0% used, resets in (71h59m|72h00m)$", result.stdout, re.M)
    assert "window overage: rejected" in result.stdout
    assert "limiting window: five_hour" in result.stdout
    sent = [r for r in fake.requests if r.path == "/v1/messages/count_tokens"]
    assert len(sent) == 1 and sent[0].headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert_no_secrets([result.stdout, result.stderr], [OAUTH_TOKEN])
    as_json = json.loads(run_cli("check", "--usage", "--json", env=env).stdout)
    assert as_json["usage"]["windows"]["7d"]["utilization"] == 0.81
    assert as_json["usage"]["representativeClaim"] == "five_hour"


def test_check_usage_with_a_console_key_and_when_unreachable(fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.response_headers = ratelimit_headers(unified=False)
    env = cli_env(tmp_path, ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY=API_KEY)
    result = run_cli("check", "--usage", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "limit requests:      3999 of 4000 left, resets in" in result.stdout
    down = run_cli("check", "--usage", env={**env, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    assert down.returncode == 1
    assert "usage:        unavailable (Anthropic API is unreachable" in down.stdout
