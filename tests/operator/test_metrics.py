"""The operator's own metrics: reconcile passes, seed and refresh outcomes and the conditions, scraped over HTTP from
the real operator's `/metrics` while it runs against the in-process API server; the refresh schedule's period."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from claude_proxy_operator.config import Config
from claude_proxy_operator.kube import CLAUDE_PROXIES, DEPLOYMENTS, SECRETS
from claude_proxy_operator.metrics import OperatorMetrics, cron_period
from tests.operator.cluster import Api, Cluster, eventually, secret_data
from tests.operator.reconcile_support import (
    CREDENTIALS,
    NS,
    OAUTH_SPEC,
    cron_runs,
    finish_job,
    outcome_line,
    proxy_body,
    seed_job,
    status_is,
)


@pytest.fixture
def scrape(operator_metrics: OperatorMetrics) -> Iterator[str]:
    server = operator_metrics.serve(0, "127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def samples(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def at(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(UTC).timestamp()


P = 'name="p",namespace="rockbot"'  # the exposition sorts label names


async def test_passes_outcomes_and_conditions_are_exported(api: Api, operator: Cluster, scrape: str) -> None:
    await api.create(
        SECRETS, NS, {"metadata": {"name": "creds"}, "data": secret_data({".credentials.json": CREDENTIALS})}
    )
    await api.create(CLAUDE_PROXIES, NS, proxy_body("p", OAUTH_SPEC))
    job = await seed_job(api, "p")
    await status_is(api, "p", "Seeded", ("False", "Seeding"))
    await finish_job(
        api, job["metadata"]["name"], "p", "seed", outcome_line("seed", "copied", "forced", "2030-01-01T08:00:00Z")
    )
    await status_is(api, "p", "Seeded", ("True", "Copied"))
    await api.patch(DEPLOYMENTS, NS, "p", {"status": {"availableReplicas": 1}}, "status")
    await cron_runs(api, "p", 1, outcome_line("refresh", "failed", "invalid_grant"))
    await status_is(api, "p", "TokenFresh", ("False", "InvalidGrant"))

    async def failing() -> dict[str, float] | None:
        m = await asyncio.to_thread(samples, scrape)
        return m if m.get(f'claude_proxy_refresh_last_result{{{P},result="failed"}}') == 1 else None

    m = await eventually(failing, what="the failed refresh in the metrics")
    assert m[f'claude_proxy_condition{{{P},status="False",type="TokenFresh"}}'] == 1
    assert m[f'claude_proxy_condition{{{P},status="True",type="TokenFresh"}}'] == 0
    assert m[f'claude_proxy_condition{{{P},status="True",type="Seeded"}}'] == 1
    assert m['claude_proxy_operator_job_outcomes_total{command="seed",result="copied"}'] == 1
    assert m['claude_proxy_operator_job_outcomes_total{command="refresh",result="failed"}'] == 1
    assert m[f"claude_proxy_token_expiry_timestamp_seconds{{{P}}}"] == at("2030-01-01T08:00:00Z")
    assert m[f"claude_proxy_refresh_period_seconds{{{P}}}"] == 1800  # the default schedule, */30
    seeded_at = m[f"claude_proxy_refresh_last_success_timestamp_seconds{{{P}}}"]
    assert m['claude_proxy_operator_reconciles_total{result="ok"}'] >= 3
    assert m["claude_proxy_operator_reconcile_duration_seconds_count"] >= 3
    assert m['claude_proxy_operator_reconciles_total{result="error"}'] == 0

    await cron_runs(api, "p", 2, outcome_line("refresh", "refreshed", "due", "2030-01-01T16:00:00Z"))
    await status_is(api, "p", "Ready", ("True", "Ready"))

    async def refreshed() -> dict[str, float] | None:
        m = await asyncio.to_thread(samples, scrape)
        return m if m.get(f'claude_proxy_refresh_last_result{{{P},result="refreshed"}}') == 1 else None

    m = await eventually(refreshed, what="the refresh in the metrics")
    assert m['claude_proxy_operator_job_outcomes_total{command="refresh",result="refreshed"}'] == 1
    assert m['claude_proxy_operator_job_outcomes_total{command="refresh",result="failed"}'] == 1  # once, not per pass
    assert m[f"claude_proxy_token_expiry_timestamp_seconds{{{P}}}"] == at("2030-01-01T16:00:00Z")
    assert m[f"claude_proxy_refresh_last_success_timestamp_seconds{{{P}}}"] >= seeded_at
    assert m[f'claude_proxy_condition{{{P},status="True",type="Ready"}}'] == 1

    await api.delete(CLAUDE_PROXIES, NS, "p")

    async def forgotten() -> bool:
        return not any(P in key for key in await asyncio.to_thread(samples, scrape))

    await eventually(forgotten, what="the deleted ClaudeProxy's series gone")


async def test_an_invalid_spec_counts_as_an_invalid_pass(api: Api, operator: Cluster, scrape: str) -> None:
    await api.create(CLAUDE_PROXIES, NS, proxy_body("bad", {"auth": {"apiKey": {}}}))
    await status_is(api, "bad", "Ready", ("False", "InvalidSpec"))

    async def counted() -> dict[str, float] | None:
        m = await asyncio.to_thread(samples, scrape)
        return m if m.get('claude_proxy_operator_reconciles_total{result="invalid"}', 0) >= 1 else None

    m = await eventually(counted, what="the invalid pass counted")
    assert m['claude_proxy_condition{name="bad",namespace="rockbot",status="False",type="Ready"}'] == 1


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        ("*/30 * * * *", 1800),
        ("0 * * * *", 3600),
        ("15,45 * * * *", 1800),
        ("0 */6 * * *", 6 * 3600),
        ("30 3 * * *", 86400),
        ("@hourly", 3600),
        ("0 9-17 * * 1-5", (24 + 24 + 16) * 3600),  # Friday 17:00 to Monday 09:00
        ("not a schedule", None),
        ("0 0 * JAN *", None),
    ],
)
def test_the_refresh_period_is_the_longest_wait_between_runs(schedule: str, period: float | None) -> None:
    assert cron_period(schedule) == period


def test_the_metrics_port_is_a_setting() -> None:
    assert Config.from_env({}).metrics_port == 8082
    assert Config.from_env({"CLAUDE_PROXY_OPERATOR_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(ValueError):
        Config.from_env({"CLAUDE_PROXY_OPERATOR_METRICS_PORT": "70000"})
