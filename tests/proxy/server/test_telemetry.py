"""OpenTelemetry: what the environment turns on, and the spans and GenAI metrics of requests served by the real app
under uvicorn, read from the SDK's in-memory exporter and reader. The export over OTLP/HTTP to a receiver is
tests/proxy/e2e/test_telemetry_e2e.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
from claude_proxy.server.telemetry import Telemetry, configured, from_env
from tests.conftest import API_KEY, metric_samples, serve
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text
from tests.paths import ROOT
from tests.proxy.server.access_support import MODEL, USAGE, eventually

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
PROMPT = "the secret prompt text 7f3a"
ANSWER = "the private answer text 9c1e"


async def no_wait(_: float) -> None:
    return None


class Traced:
    def __init__(self, url: str, spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.url, self.spans, self.reader = url, spans, reader

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=20)

    def finished(self, count: int) -> list[ReadableSpan]:
        def check() -> list[ReadableSpan]:
            spans = list(self.spans.get_finished_spans())
            assert len(spans) == count, [s.name for s in spans]
            return spans

        return eventually(check)

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


@pytest.fixture
def traced(fake: FakeAnthropic, tmp_path: Path) -> Iterator[Traced]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = Telemetry(span_exporter=spans, metric_reader=reader, environ={}, batch=False)
    settings = Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    with serve(create_app(settings, sleep=no_wait, telemetry=telemetry)) as url:
        yield Traced(url, spans, reader)


def every_value(spans: list[ReadableSpan]) -> str:
    return json.dumps([{**dict(s.attributes or {}), "name": s.name} for s in spans], default=str)


def test_a_streamed_request_is_one_span_continuing_the_callers_trace_with_a_child_per_attempt(
    fake: FakeAnthropic, traced: Traced
) -> None:
    fake.script(
        ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"}),
        message(text(ANSWER), usage=USAGE, model="claude-sonnet-4-6-20260101"),
    )
    chunks = list(
        traced.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_headers={"traceparent": TRACEPARENT},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    spans = traced.finished(3)
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    attempts = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(attempts) == 2
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    assert request.parent is not None and format(request.parent.span_id, "016x") == PARENT_ID
    assert all(a.parent is not None and a.parent.span_id == request.context.span_id for a in attempts)
    assert [a.attributes.get("http.response.status_code") for a in attempts] == [529, 200]  # type: ignore[union-attr]
    assert [a.attributes.get("http.request.resend_count") for a in attempts] == [None, 1]  # type: ignore[union-attr]
    assert attempts[0].attributes["error.type"] == "529"  # type: ignore[index]
    # the request span ends with the stream, after the attempt that opened it
    assert request.end_time is not None and attempts[1].end_time is not None
    assert request.end_time > attempts[1].end_time
    a = request.attributes or {}
    assert request.name == f"chat {MODEL}"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.system"] == "anthropic"  # the v1.36.0 name, dropped by gen_ai_latest_experimental
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.response.model"] == "claude-sonnet-4-6-20260101"
    assert a["gen_ai.usage.input_tokens"] == 11 + 100 + 40
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 40
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("end_turn",)  # type: ignore[arg-type]
    assert a["http.route"] == "/v1/chat/completions" and a["http.response.status_code"] == 200
    assert PROMPT not in every_value(spans) and ANSWER not in every_value(spans)


def test_the_genai_metrics_record_duration_tokens_and_the_stream_timings(fake: FakeAnthropic, traced: Traced) -> None:
    fake.script(message(text("a b c d"), usage=USAGE), message(text("whole"), usage=USAGE))
    client = traced.client()
    list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "y"}])
    traced.finished(4)
    points = traced.metrics()
    (duration,) = points["gen_ai.server.request.duration"]
    assert duration.count == 2
    assert duration.attributes["gen_ai.request.model"] == MODEL
    assert duration.attributes["gen_ai.provider.name"] == "anthropic"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert tokens["input"].sum == 2 * (11 + 100 + 40) and tokens["input"].count == 2
    assert tokens["output"].sum == 2 * 5
    (ttft,) = points["gen_ai.server.time_to_first_token"]
    (tpot,) = points["gen_ai.server.time_per_output_token"]
    assert ttft.count == 1 and tpot.count == 1  # the streamed request only
    assert 0 < tpot.sum < duration.sum
    m = metric_samples(traced.url)
    assert m["proxy_time_per_output_token_seconds_count"] == 1
    assert len(traced.spans.get_finished_spans()) == 4  # the scrape and the probes are not traced
    assert httpx.get(f"{traced.url}/health").status_code == 200
    assert httpx.get(f"{traced.url}/readyz").status_code == 200
    traced.finished(4)


def test_an_upstream_error_ends_both_spans_as_errors(fake: FakeAnthropic, traced: Traced) -> None:
    fake.script(ErrorReply(400, "invalid_request_error", "bad"))
    with pytest.raises(openai.BadRequestError):
        traced.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    spans = traced.finished(2)
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (attempt,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert attempt.attributes["error.type"] == "400"  # type: ignore[index]
    assert not attempt.status.is_ok and not request.status.is_ok
    assert request.attributes["http.response.status_code"] == 400  # type: ignore[index]
    assert request.context.trace_id != int(TRACE_ID, 16)  # no traceparent: a trace of its own


def test_the_latest_conventions_opt_in_drops_the_old_provider_attribute(fake: FakeAnthropic, tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    telemetry = Telemetry(
        span_exporter=spans, environ={"OTEL_SEMCONV_STABILITY_OPT_IN": "http,gen_ai_latest_experimental"}, batch=False
    )
    settings = Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "HOME": str(tmp_path)})
    with serve(create_app(settings, telemetry=telemetry)) as url:
        fake.script(message(text("hi")))
        openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )

        def server_span() -> ReadableSpan:
            found = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
            assert found
            return found[0]

        request = eventually(server_span)
    assert request.attributes["gen_ai.provider.name"] == "anthropic"
    assert "gen_ai.system" not in request.attributes


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (None, None)),
        ({"OTEL_SERVICE_NAME": "proxy"}, (None, None)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp", "otlp")),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ("otlp", None)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}, ("otlp", None)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console", None)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, (None, None)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, ("otlp", "otlp")),
    ],
)
def test_only_the_standard_environment_turns_telemetry_on(
    environ: dict[str, str], expected: tuple[str | None, str | None]
) -> None:
    assert configured(environ) == expected
    if expected == (None, None):
        assert from_env(environ) is None


HOT_PATH = """
import sys
from tests.conftest import serve
from tests.fakes.anthropic import FakeAnthropic, message, text
from claude_proxy.config import Settings
from claude_proxy.server.app import create_app
import httpx
import openai

with FakeAnthropic(api_keys=("k",)) as fake:
    fake.script(message(text("hi")))
    app = create_app(Settings.from_env({"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "k"}))
    with serve(app) as url:
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
        )
print(" ".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""


def test_unconfigured_no_sdk_or_exporter_is_imported() -> None:
    """FastAPI itself imports opentelemetry-api (its own hooks, which the app turns off); the SDK and the exporters
    are imported only when the environment configures telemetry."""
    environ = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    environ["PYTHONPATH"] = f"{ROOT / 'proxy'}:{ROOT / 'operator'}:{ROOT}"
    done = subprocess.run(
        [sys.executable, "-c", HOT_PATH], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    modules = done.stdout.split()
    assert "opentelemetry.trace" in modules  # the API, as FastAPI imports it: the check sees the imports
    assert not [m for m in modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]


def test_the_start_up_log_says_where_telemetry_goes_without_credentials(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:secret@collector:4318", "OTEL_METRICS_EXPORTER": "none"}
    with caplog.at_level(logging.INFO, logger="claude_proxy"):
        telemetry = from_env(environ)
    assert telemetry is not None and telemetry.tracer is not None and telemetry.duration is None
    telemetry.shutdown()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("OpenTelemetry:"))
    assert line == "OpenTelemetry: traces over OTLP (http/protobuf) to https://collector:4318, metrics off"
