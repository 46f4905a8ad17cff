"""Prometheus metrics, one registry per app instance (tests build many apps in one process).

Everything is recorded at the edge (the access middleware, the upstream and relay hooks), with O(1) updates on the
hot path: label children are looked up once and cached, and the gauges that describe state (slots in use, queue
length, token expiry, event loop tasks) are computed only when `/metrics` is scraped.

Label values stay bounded: routes are the matched route templates, statuses are numbers, and a model name (which
clients choose) becomes a label only once Anthropic answered a request for it (its usage recorded), for the first
`MAX_MODELS` such ids; any other model counts as `other`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from claude_proxy.convert.tables import USAGE_FIELDS, count
from claude_proxy.credentials.resolver import Credential
from claude_proxy.upstream import ratelimits

disable_created_metrics()  # the `_created` twin of every series only doubles the scrape

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODELS = 32
OTHER = "other"
NO_MODEL = ""

# Seconds: fast non-streamed answers to long generations (the read timeout is 600 s by default).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
# Seconds per output token after the first: Claude streams some tens of tokens a second.
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)


class _StateCollector(Collector):
    """Gauges read at scrape time: token expiry, concurrency slots, drain state, kept Responses items, event loop
    tasks."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        credential = m.credential()
        if credential is not None and credential.expires_at is not None:
            family = GaugeMetricFamily(
                "proxy_oauth_token_expiry_seconds",
                "Seconds until the OAuth access token expires (negative once expired)",
                labels=("credential",),
            )
            family.add_metric((credential.kind.value,), credential.expires_at - m.clock())
            yield family
        yield GaugeMetricFamily("proxy_upstream_inflight", "Upstream requests holding a slot", value=m.inflight())
        yield GaugeMetricFamily("proxy_upstream_queued", "Requests waiting for an upstream slot", value=m.queued())
        yield GaugeMetricFamily(
            "proxy_upstream_login_valid",
            "1 while Anthropic accepts the credential, 0 once it refused it (401, 403, other refusals), -1 before"
            " any answer",
            value=m.login(),
        )
        yield GaugeMetricFamily("proxy_draining", "1 while shutting down (readyz is 503)", value=float(m.draining()))
        items, size = m.stored()
        yield GaugeMetricFamily(
            "proxy_responses_store_items", "Responses output items kept for item references", value=items
        )
        yield GaugeMetricFamily(
            "proxy_responses_store_bytes", "Estimated memory the kept Responses output items take", value=size
        )
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the event loop (tests)
            tasks = 0
        yield GaugeMetricFamily("proxy_event_loop_tasks", "asyncio tasks alive in the server's event loop", value=tasks)
        yield from m.ratelimit_families()


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        # Set by the app once the parts exist; each returns the current value at scrape time.
        self.credential: Callable[[], Credential | None] = lambda: None
        self.inflight: Callable[[], float] = lambda: 0.0
        self.queued: Callable[[], float] = lambda: 0.0
        self.draining: Callable[[], bool] = lambda: False
        self.stored: Callable[[], tuple[int, int]] = lambda: (0, 0)  # Responses output items kept, and their bytes
        # The latest upstream headers that carried rate-limit state, parsed only when scraped.
        self._ratelimit_headers: Mapping[str, str] | None = None
        self._ratelimit_seen = 0.0
        self.login: Callable[[], float] = lambda: -1.0
        r = self.registry
        self.requests = Counter(
            "proxy_requests",
            "Requests answered, by route, HTTP status and model",
            ("route", "status", "model"),
            registry=r,
        )
        self.duration = Histogram(
            "proxy_request_duration_seconds",
            "Time from request to the end of the response (whole stream included)",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "proxy_upstream_latency_seconds",
            "Time until Anthropic answered one attempt (headers for streams, the whole body otherwise)",
            ("stream",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "proxy_upstream_requests",
            "Attempts sent to Anthropic, by HTTP status (or 'error')",
            ("status",),
            registry=r,
        )
        self.ttft = Histogram(
            "proxy_time_to_first_token_seconds",
            "Time from request to the first streamed output",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "proxy_time_per_output_token_seconds",
            "Streamed answers that ended normally: (end of stream - first output) / (output tokens - 1)",
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "proxy_tokens", "Tokens reported by Anthropic, by model and kind", ("model", "kind"), registry=r
        )
        self.retries = Counter(
            "proxy_upstream_retries", "Retries of upstream requests, by reason", ("reason",), registry=r
        )
        self.disconnects = Counter(
            "proxy_client_disconnects", "Clients that went away before their answer was complete", registry=r
        )
        self.stream_errors = Counter(
            "proxy_stream_errors", "Streams ended with an error line after output began, by type", ("type",), registry=r
        )
        self.rejected = Counter(
            "proxy_rejected_requests", "Requests refused by a limit, by reason", ("reason",), registry=r
        )
        r.register(_StateCollector(self))
        self._models: dict[str, str] = {}
        self._request_children: dict[tuple[str, int, str], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._token_children: dict[tuple[str, str], Any] = {}  # labels() costs more than the increment itself
        self._attempt_children: dict[int | None, Any] = {}
        self._attempt_latency: dict[bool, Any] = {}

    # ---- recording (hot path) --------------------------------------------------------------------------------------

    def accept_model(self, model: str | None) -> None:
        """`model` is one Anthropic answered for: its own label from now on (while there is room for one)."""
        if model and model not in self._models and len(self._models) < MAX_MODELS:
            self._models[model] = model[:100]

    def model_label(self, model: str | None) -> str:
        if not model:
            return NO_MODEL
        return self._models.get(model, OTHER)

    def request(self, route: str, status: int, model: str | None, seconds: float) -> None:
        key = (route, status, self.model_label(model))
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status), key[2])
        child.inc()
        timer = self._duration_children.get(route)
        if timer is None:
            timer = self._duration_children[route] = self.duration.labels(route)
        timer.observe(seconds)

    def usage(self, model: str | None, usage: Mapping[str, Any] | None) -> None:
        """The usage of an answer Anthropic gave for `model` (which is so accepted as a label)."""
        if not usage:
            return
        self.accept_model(model)
        label = self.model_label(model)
        for field in USAGE_FIELDS:
            value = count(usage.get(field.anthropic))
            if value:
                child = self._token_children.get((label, field.kind))
                if child is None:
                    child = self._token_children[label, field.kind] = self.tokens.labels(label, field.kind)
                child.inc(value)

    # Upstream observer interface (see upstream.UpstreamObserver).
    def attempt(self, status: int | None, seconds: float, stream: bool) -> None:
        child = self._attempt_children.get(status)
        if child is None:
            child = self._attempt_children[status] = self.upstream_requests.labels(
                str(status) if status is not None else "error"
            )
        child.inc()
        timer = self._attempt_latency.get(stream)
        if timer is None:
            timer = self._attempt_latency[stream] = self.upstream_latency.labels("true" if stream else "false")
        timer.observe(seconds)

    def retry(self, reason: str) -> None:
        self.retries.labels(reason).inc()

    def ratelimits(self, headers: Mapping[str, str]) -> None:
        if ratelimits.carries(headers):
            self._ratelimit_headers = headers
            self._ratelimit_seen = self.clock()

    def ratelimit_families(self) -> Iterator[Metric]:
        """Gauges of the rate-limit state the latest upstream response reported (none before the first)."""
        headers = self._ratelimit_headers
        if headers is None:
            return
        state = ratelimits.parse(headers)
        now = self.clock()
        yield GaugeMetricFamily(
            "proxy_upstream_ratelimit_age_seconds",
            "Seconds since the upstream response the rate-limit gauges describe",
            value=now - self._ratelimit_seen,
        )
        limit = GaugeMetricFamily("proxy_upstream_ratelimit_limit", "Anthropic rate limit, by kind", labels=("kind",))
        remaining = GaugeMetricFamily(
            "proxy_upstream_ratelimit_remaining", "Anthropic rate limit left, by kind", labels=("kind",)
        )
        reset = GaugeMetricFamily(
            "proxy_upstream_ratelimit_reset_seconds",
            "Seconds until the Anthropic rate limit is replenished, by kind",
            labels=("kind",),
        )
        for kind, v in state.limits.items():
            if v.limit is not None:
                limit.add_metric((kind,), v.limit)
            if v.remaining is not None:
                remaining.add_metric((kind,), v.remaining)
            if v.reset is not None:
                reset.add_metric((kind,), v.reset - now)
        utilization = GaugeMetricFamily(
            "proxy_upstream_ratelimit_unified_utilization",
            "Share (0..1) of the subscription window used, by window",
            labels=("window",),
        )
        window_reset = GaugeMetricFamily(
            "proxy_upstream_ratelimit_unified_reset_seconds",
            "Seconds until the subscription window resets, by window",
            labels=("window",),
        )
        status = GaugeMetricFamily(
            "proxy_upstream_ratelimit_unified_status",
            "1 for the subscription window's current status (allowed, allowed_warning, rejected, other)",
            labels=("window", "status"),
        )
        for name, w in state.windows.items():
            if w.utilization is not None:
                utilization.add_metric((name,), w.utilization)
            if w.reset is not None:
                window_reset.add_metric((name,), w.reset - now)
            if w.status is not None:
                status.add_metric((name, w.status), 1.0)
        yield from (limit, remaining, reset, utilization, window_reset, status)
        if state.representative_claim is not None:
            claim = GaugeMetricFamily(
                "proxy_upstream_ratelimit_unified_representative_claim",
                "1 for the subscription window that currently limits the login",
                labels=("claim",),
            )
            claim.add_metric((state.representative_claim,), 1.0)
            yield claim
        if state.fallback_percentage is not None:
            yield GaugeMetricFamily(
                "proxy_upstream_ratelimit_unified_fallback_percentage",
                "Share of the subscription rate available on fallback, as Anthropic reports it",
                value=state.fallback_percentage,
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)
