"""OpenTelemetry traces and metrics after the GenAI semantic conventions, off unless the standard `OTEL_` environment
configures an exporter.

`from_env()` reads the environment once, when the app is made: with no exporter configured (or `OTEL_SDK_DISABLED`
true) it gives None and nothing of OpenTelemetry is imported; the app's hooks then cost one `is None` test each.
Configured, it builds the SDK's providers (never the global ones: each app has its own, as each has its own
Prometheus registry) with OTLP/HTTP exporters (or the console ones), and:

- one SERVER span per request (but the probes and `/metrics`), started by the access middleware with the incoming
  W3C `traceparent` as parent and ended when the response is over, a stream's last byte included; on the GenAI
  routes it is named
  `chat {model}` and carries `gen_ai.*` attributes: operation, provider, request and response model, the usage
  (cache reads and writes included) and the finish reasons;
- one CLIENT span per upstream attempt, a child of the request's, through the upstream layer's `AttemptTracer`
  hook (its `http.request.resend_count` numbers the retries);
- the metrics `gen_ai.client.token.usage`, `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`
  and `gen_ai.server.time_per_output_token`, beside the Prometheus ones.

Prompt and answer text are never recorded: the proxy does not implement content capture, whatever
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` says (the start-up log says so when it is set).

`OTEL_SEMCONV_STABILITY_OPT_IN`: the proxy emits the latest experimental GenAI conventions; by default it also sets
the v1.36.0 name of the provider attribute (`gen_ai.system`) beside `gen_ai.provider.name`, which
`gen_ai_latest_experimental` drops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from claude_proxy.redact import display_url
from claude_proxy.server.access import RequestInfo

if TYPE_CHECKING:  # pragma: no cover
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("claude_proxy")

PROVIDER = "anthropic"
OPERATION = "chat"  # chat completions, the Responses API and Messages are all a chat with the model
# The request span of the route being served, for the upstream attempts made while serving it.
CURRENT: ContextVar[RequestTrace | None] = ContextVar("claude_proxy_request_trace", default=None)

# Bucket boundaries the GenAI metrics conventions advise.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

_EXPORTERS = ("otlp", "console")
# Probes and scrapes are not traced: every few seconds from the kubelet and Prometheus, they would drown the rest.
UNTRACED = frozenset(("/health", "/readyz", "/metrics"))


def _on(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _exporter(environ: Mapping[str, str], signal: str) -> str | None:
    """The exporter one signal ("traces", "metrics") uses, or None when it is off: the signal's `OTEL_*_EXPORTER`
    when set (`none` turns it off), else `otlp` when an OTLP endpoint is configured, else off."""
    chosen = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if chosen:
        names = [name.strip() for name in chosen.split(",") if name.strip()]
        known = [name for name in names if name in _EXPORTERS]
        for name in names:
            if name not in (*_EXPORTERS, "none"):
                log.warning("OTEL_%s_EXPORTER=%s is not supported (otlp, console, none); ignored", signal.upper(), name)
        return known[0] if known else None
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return None


def configured(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(traces exporter, metrics exporter) the environment asks for, each None when off."""
    environ = os.environ if environ is None else environ
    if _on(environ.get("OTEL_SDK_DISABLED")):
        return None, None
    return _exporter(environ, "traces"), _exporter(environ, "metrics")


def from_env(environ: Mapping[str, str] | None = None) -> Telemetry | None:
    """The app's telemetry as the environment configures it, or None (nothing of OpenTelemetry imported)."""
    environ = os.environ if environ is None else environ
    traces, metrics = configured(environ)
    if traces is None and metrics is None:
        return None
    span_exporter = metric_reader = None
    if traces is not None:
        span_exporter = _span_exporter(traces, environ)
    if metrics is not None:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        metric_reader = PeriodicExportingMetricReader(_metric_exporter(metrics, environ))
    log.info(
        "OpenTelemetry: traces %s, metrics %s",
        _where(traces, environ, "traces"),
        _where(metrics, environ, "metrics"),
    )
    return Telemetry(span_exporter=span_exporter, metric_reader=metric_reader, environ=environ)


def _where(exporter: str | None, environ: Mapping[str, str], signal: str) -> str:
    """Where a signal goes, for the start-up log (the endpoint without a user, password or query)."""
    if exporter is None:
        return "off"
    if exporter == "console":
        return "to the console"
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"
    )
    return f"over OTLP ({_protocol(environ, signal)}) to {display_url(endpoint.split('?')[0])}"


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    return (
        environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _span_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if _protocol(environ, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if _protocol(environ, "metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _header_getter() -> Any:
    from opentelemetry.propagators.textmap import Getter

    class ScopeHeaders(Getter[Iterable[tuple[bytes, bytes]]]):
        """Reads the W3C trace context straight from an ASGI scope's raw headers."""

        def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
            wanted = key.encode("latin-1")
            found = [value.decode("latin-1") for name, value in carrier if name.lower() == wanted]
            return found or None

        def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
            return [name.decode("latin-1") for name, _ in carrier]

    return ScopeHeaders()


class RequestTrace:
    """One request's span, and what its upstream attempts need of it."""

    __slots__ = ("context", "info", "span", "token")

    def __init__(self, span: Any, context: Any, info: RequestInfo) -> None:
        self.span = span
        self.context = context  # the OpenTelemetry context holding `span`, the parent of the attempts
        self.info = info
        self.token = CURRENT.set(self)  # in the request's task: its upstream attempts find it there


class AttemptSpan:
    """One upstream attempt's CLIENT span (the upstream layer's `AttemptSpan`)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def end(self, status: int | None, error: str | None) -> None:
        span = self.span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(_ERROR)
        span.end()


_ERROR: Any = None  # the SDK's error Status, set when a Telemetry is made


class Telemetry:
    """The tracer and the GenAI instruments of one app. `span_exporter` and `metric_reader` may be the SDK's
    in-memory ones (tests); either may be None, which turns that signal off."""

    def __init__(
        self,
        *,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        environ: Mapping[str, str] | None = None,
        batch: bool = True,
    ) -> None:
        global _ERROR
        from opentelemetry import propagate
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        from claude_proxy import __version__

        environ = os.environ if environ is None else environ
        _ERROR = Status(StatusCode.ERROR)
        opt_in = {v.strip() for v in environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
        self.legacy_system = "gen_ai_latest_experimental" not in opt_in  # also emit v1.36.0's gen_ai.system
        if environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
            log.warning(
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is set: the proxy never records prompt or "
                "answer text in its telemetry"
            )
        attributes = {"service.version": __version__}
        if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
            attributes["service.name"] = "claude-code-proxy"
        resource = Resource.create(attributes)  # with OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
        self._kind_server, self._kind_client = SpanKind.SERVER, SpanKind.CLIENT
        self._in_context = set_span_in_context
        self._propagator = propagate.get_global_textmap()
        self._getter = _header_getter()
        self.tracer_provider = self.meter_provider = None
        self.tracer: Any = None
        if span_exporter is not None:
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(
                BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
            )
            self.tracer_provider = provider
            self.tracer = provider.get_tracer("claude_proxy", __version__)
        self.tokens = self.duration = self.ttft = self.tpot = None
        if metric_reader is not None:
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
            meter = self.meter_provider.get_meter("claude_proxy", __version__)
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self.duration = meter.create_histogram(
                "gen_ai.server.request.duration",
                unit="s",
                description="Generative AI server request duration such as time-to-last byte or last output token",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            self.ttft = meter.create_histogram(
                "gen_ai.server.time_to_first_token",
                unit="s",
                description="Time to generate first token for successful responses",
                explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
            )
            self.tpot = meter.create_histogram(
                "gen_ai.server.time_per_output_token",
                unit="s",
                description="Time per output token generated after the first token for successful responses",
                explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
            )

    # ---- the request span (the access middleware) -----------------------------------------------------------------

    def start(self, scope: Mapping[str, Any], info: RequestInfo) -> RequestTrace | None:
        """The request's span, its parent the incoming `traceparent` (None when traces are off); the upstream
        attempts made in this task until `finish` are its children."""
        if self.tracer is None or scope.get("path") in UNTRACED:
            return None
        parent = self._propagator.extract(scope.get("headers") or (), getter=self._getter)
        method = scope.get("method", "")
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=self._kind_server,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        )
        return RequestTrace(span, self._in_context(span), info)

    def finish(self, trace: RequestTrace | None, info: RequestInfo, route: str, status: int, seconds: float) -> None:
        """The request is over (a stream's last byte included): the span's attributes and end, the GenAI metrics."""
        if trace is not None:
            CURRENT.reset(trace.token)
            self._end_span(trace, route, status)
        if self.duration is None or not info.model:
            return
        attributes = self._metric_attributes(info)
        if status >= 400:
            self.duration.record(seconds, {**attributes, "error.type": info.error or str(status)})
            return
        self.duration.record(seconds, attributes)
        if info.first_token is not None:
            self.ttft.record(info.first_token, attributes)  # type: ignore[union-attr]
        if info.tpot is not None:
            self.tpot.record(info.tpot, attributes)  # type: ignore[union-attr]
        tokens = self.tokens
        assert tokens is not None
        prompt = info.input_tokens + info.cache_read_tokens + info.cache_write_tokens
        if prompt or info.output_tokens:
            tokens.record(prompt, {**attributes, "gen_ai.token.type": "input"})
            tokens.record(info.output_tokens, {**attributes, "gen_ai.token.type": "output"})

    def _metric_attributes(self, info: RequestInfo) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": info.model,
        }
        if info.response_model:
            attributes["gen_ai.response.model"] = info.response_model
        if self.legacy_system:
            attributes["gen_ai.system"] = PROVIDER
        return attributes

    def _end_span(self, trace: RequestTrace, route: str, status: int) -> None:
        span, info = trace.span, trace.info
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if info.model:
            span.update_name(f"{OPERATION} {info.model}")
            span.set_attributes(self._metric_attributes(info))
            # Per the conventions, input tokens count every input token, cache reads and writes included.
            span.set_attribute(
                "gen_ai.usage.input_tokens", info.input_tokens + info.cache_read_tokens + info.cache_write_tokens
            )
            span.set_attribute("gen_ai.usage.output_tokens", info.output_tokens)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", info.cache_read_tokens)
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", info.cache_write_tokens)
            if info.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", (info.finish_reason,))
            if info.stream is not None:
                span.set_attribute("claude_proxy.stream", info.stream)
            if info.upstream_request_id:
                span.set_attribute("gen_ai.response.id", info.upstream_request_id)
        else:
            span.update_name(f"{span.name} {route}")
        if status >= 500 or info.error:
            span.set_attribute("error.type", info.error or str(status))
            if status >= 500 or status == 499 or info.error:
                span.set_status(_ERROR)
        span.end()

    # ---- the upstream attempts (upstream.api.AttemptTracer) ------------------------------------------------------

    def attempt(self, resend_count: int, stream: bool) -> AttemptSpan | None:
        trace = CURRENT.get()
        if trace is None or self.tracer is None:
            return None
        model = trace.info.model
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
        }
        if model:
            attributes["gen_ai.request.model"] = model
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        span = self.tracer.start_span(
            f"{OPERATION} {model}" if model else "POST",
            context=trace.context,
            kind=self._kind_client,
            attributes=attributes,
        )
        return AttemptSpan(span)

    def shutdown(self) -> None:
        """Export what is pending and stop the exporters (the app's lifespan ends)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception as exc:  # an unreachable collector must not fail the shutdown
                    log.warning("telemetry shutdown: %s", exc)
