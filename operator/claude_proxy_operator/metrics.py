"""The operator's own Prometheus metrics, served on `/metrics` at CLAUDE_PROXY_OPERATOR_METRICS_PORT.

Two hooks feed them: `reconcile_pass()` around each reconcile pass (how many, how long, how they ended), and
`observe(body, status)` with the status each pass computed. From the status come, per ClaudeProxy, its conditions
(as kube-state-metrics gives a Pod's: one series per status, 1 for the current one), the token expiry, when a seed
or refresh last succeeded and how the last refresh ended, the refresh schedule's period, and the seed and refresh
outcomes as counters (each counted once, when a pass first sees it; those already in the status when the operator
starts are not counted again).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from claude_proxy_operator.spec import Refresh

CONDITION_STATUSES = ("True", "False", "Unknown")
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---- the refresh schedule's period --------------------------------------------------------------------------------

_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field(text: str, low: int, high: int) -> frozenset[int] | None:
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else (1 if not step_text else 0)
        if step <= 0:
            return None
        if spec == "*":
            start, end = low, high
        elif "-" in spec:
            a, _, b = spec.partition("-")
            if not (a.isdigit() and b.isdigit()):
                return None
            start, end = int(a), int(b)
        elif spec.isdigit():
            start = int(spec)
            end = high if step_text else start
        else:
            return None  # names (MON, JAN) are not read: no period then
        if start < low or end > high or start > end:
            return None
        values.update(range(start, end + 1, step))
    return frozenset(values)


def cron_period(schedule: str) -> float | None:
    """The longest wait, in seconds, between two runs of a five-field cron schedule (None when not understood)."""
    schedule = _MACROS.get(schedule.strip(), schedule)
    fields = schedule.split()
    if len(fields) != 5:
        return None
    parsed = [_field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True)]
    sets = [p for p in parsed if p is not None]
    if len(sets) != len(parsed):
        return None
    minutes, hours, days, months, weekdays = sets
    weekdays = frozenset(d % 7 for d in weekdays)
    any_day, any_weekday = fields[2] == "*", fields[4] == "*"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs: list[datetime] = []
    moment = start
    for _ in range(366 * 24):  # a year, hour by hour; the minutes of matching hours
        if moment.month in months and moment.hour in hours:
            day_ok = moment.day in days
            weekday_ok = (moment.isoweekday() % 7) in weekdays
            matches = (
                (day_ok and weekday_ok) if any_day or any_weekday else (day_ok or weekday_ok)
            )  # cron: either day field, when both are restricted
            if matches:
                runs.extend(moment.replace(minute=m) for m in sorted(minutes))
        moment += timedelta(hours=1)
    if len(runs) < 2:
        return None
    return max((b - a).total_seconds() for a, b in itertools.pairwise(runs))


# ---- the metrics ----------------------------------------------------------------------------------------------------


@dataclass
class _Proxy:
    """What the metrics keep of one ClaudeProxy between passes."""

    conditions: dict[str, str] = field(default_factory=dict)
    oauth: bool = False
    token_expiry: float | None = None
    last_success: float | None = None
    last_refresh: str | None = None  # the result of the last refresh run
    period: float | None = None
    counted: set[tuple[str, str]] = field(default_factory=set)  # (command, time) of the outcomes counted


class _StatusCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ("namespace", "name")
        condition = GaugeMetricFamily(
            "claude_proxy_condition",
            "A ClaudeProxy's status conditions: 1 for the condition's current status, 0 for the others",
            labels=(*labels, "type", "status"),
        )
        expiry = GaugeMetricFamily(
            "claude_proxy_token_expiry_timestamp_seconds",
            "When the OAuth access token on a ClaudeProxy's volume expires (Unix time)",
            labels=labels,
        )
        success = GaugeMetricFamily(
            "claude_proxy_refresh_last_success_timestamp_seconds",
            "When a seed or refresh run last ended without failing, for an OAuth ClaudeProxy (Unix time)",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "claude_proxy_refresh_last_result",
            "1 for how the last refresh run ended (refreshed, skipped, failed)",
            labels=(*labels, "result"),
        )
        period = GaugeMetricFamily(
            "claude_proxy_refresh_period_seconds",
            "The longest wait between two runs of a ClaudeProxy's refresh schedule",
            labels=labels,
        )
        for (namespace, name), proxy in list(self.metrics.proxies.items()):
            for kind, current in proxy.conditions.items():
                for value in CONDITION_STATUSES:
                    condition.add_metric((namespace, name, kind, value), 1.0 if current == value else 0.0)
            if not proxy.oauth:
                continue
            if proxy.token_expiry is not None:
                expiry.add_metric((namespace, name), proxy.token_expiry)
            if proxy.last_success is not None:
                success.add_metric((namespace, name), proxy.last_success)
            if proxy.last_refresh is not None:
                last.add_metric((namespace, name, proxy.last_refresh), 1.0)
            if proxy.period is not None:
                period.add_metric((namespace, name), proxy.period)
        yield from (condition, expiry, success, last, period)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "claude_proxy_operator_reconciles",
            "Reconcile passes, by result (ok; invalid: the spec is refused; error: the pass failed and is retried)",
            ("result",),
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "claude_proxy_operator_reconcile_duration_seconds",
            "How long a reconcile pass took",
            buckets=BUCKETS,
            registry=r,
        )
        self.job_outcomes = Counter(
            "claude_proxy_operator_job_outcomes",
            "Seed and refresh runs the operator saw finish, by command and result",
            ("command", "result"),
            registry=r,
        )
        for result in ("ok", "invalid", "error"):
            self.reconciles.labels(result)  # every result from the start, so rate() sees the first error
        self.proxies: dict[tuple[str, str], _Proxy] = {}
        self._periods: dict[str, float | None] = {}
        r.register(_StatusCollector(self))

    @contextlib.contextmanager
    def reconcile_pass(self) -> Iterator[None]:
        started = time.perf_counter()
        result = "error"
        try:
            yield
            result = "ok"
        except kopf.PermanentError:
            result = "invalid"
            raise
        finally:
            self.reconcile_seconds.observe(time.perf_counter() - started)
            self.reconciles.labels(result).inc()

    def observe(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """The status a pass computed for the ClaudeProxy `body`."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        first = key not in self.proxies
        proxy = self.proxies.setdefault(key, _Proxy())
        proxy.conditions = {
            str(c.get("type")): str(c.get("status") or "Unknown")
            for c in status.get("conditions") or ()
            if isinstance(c, Mapping)
        }
        proxy.oauth = status.get("authMode") == "oauth"
        proxy.token_expiry = _timestamp(status.get("tokenExpiresAt"))
        refresh = status.get("lastRefresh") if isinstance(status.get("lastRefresh"), Mapping) else None
        seed = status.get("seed") if isinstance(status.get("seed"), Mapping) else None
        proxy.last_refresh = str(refresh.get("result")) if refresh else None
        for command, record in (("seed", seed), ("refresh", refresh)):
            if not record:
                continue
            moment, result = str(record.get("time", "")), str(record.get("result", ""))
            if result != "failed":
                when = _timestamp(moment)
                if when is not None and (proxy.last_success is None or when > proxy.last_success):
                    proxy.last_success = when
            if (command, moment) not in proxy.counted:
                proxy.counted = {c for c in proxy.counted if c[0] != command} | {(command, moment)}
                if not first:
                    self.job_outcomes.labels(command, result).inc()
        if proxy.oauth:
            oauth = ((body.get("spec") or {}).get("auth") or {}).get("oauth") or {}
            schedule = str((oauth.get("refresh") or {}).get("schedule") or Refresh.schedule)
            if schedule not in self._periods:
                self._periods[schedule] = cron_period(schedule)
            proxy.period = self._periods[schedule]

    def forget(self, namespace: str, name: str) -> None:
        """The ClaudeProxy is gone: its series go too."""
        self.proxies.pop((namespace, name), None)

    def serve(self, port: int, address: str = "0.0.0.0") -> Any:
        """`/metrics` on `port` in a thread of its own; returns the server (its port is the one bound)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
