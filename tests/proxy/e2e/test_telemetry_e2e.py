"""OpenTelemetry end to end: `claude-proxy serve` configured by the standard OTEL_ environment exports over OTLP/HTTP to
a receiver on 127.0.0.1 that decodes the protobuf with opentelemetry-proto, while the official openai SDK streams a
chat completion carrying the caller's `traceparent` and the fake Anthropic answers 529 once."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import API_KEY
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text
from tests.proxy.serve_support import serve_process

pytestmark = pytest.mark.slow

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
PROMPT = "a prompt nobody may read 5d2b"
ANSWER = "an answer nobody may read 8e4c"
USAGE = {"input_tokens": 21, "output_tokens": 9, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 0}


class Receiver:
    """An OTLP/HTTP receiver: what it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []  # (resource attributes, span)
        self.metrics: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers.get("content-type") == "application/x-protobuf"
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    with receiver.lock:
                        for rs in request.resource_spans:
                            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                            receiver.spans.extend((resource, s) for ss in rs.scope_spans for s in ss.spans)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    metrics = ExportMetricsServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.metrics.extend(
                            m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                        )
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_spans(self, count: int, timeout: float = 20) -> list[tuple[dict[str, Any], Span]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            assert time.monotonic() < deadline, f"{len(self.spans)} spans received"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [v.string_value for v in value.array_value.values] if kind == "array_value" else getattr(value, kind)
        )
    return out


def test_a_streamed_request_is_exported_as_one_trace_continuing_the_callers(
    fake: FakeAnthropic, receiver: Receiver, tmp_path: Path
) -> None:
    fake.script(
        ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "1"}),
        message(text(ANSWER), usage=USAGE, model="claude-opus-4-6"),
    )
    env = {
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "proxy-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    with serve_process(env, tmp_path) as served:
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=30)
        stream = client.chat.completions.create(
            model="claude-opus-4-6",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        exported = receiver.wait_spans(3)
        deadline = time.monotonic() + 20
        while "gen_ai.server.time_per_output_token" not in receiver.metrics:
            assert time.monotonic() < deadline, receiver.metrics
            time.sleep(0.05)
    resources = {r["service.name"] for r, _ in exported}
    spans = [s for _, s in exported]
    assert resources == {"proxy-under-test"}
    assert len(spans) == 3
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    (request,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    attempts = sorted((s for s in spans if s.kind == Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano)
    assert request.parent_span_id.hex() == PARENT_ID
    assert [a.parent_span_id for a in attempts] == [request.span_id, request.span_id]
    assert [attributes(a).get("http.response.status_code") for a in attempts] == [529, 200]
    assert request.end_time_unix_nano > attempts[1].end_time_unix_nano  # ended with the stream, not the first byte
    a = attributes(request)
    assert request.name == "chat claude-opus-4-6"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "claude-opus-4-6"
    assert a["gen_ai.usage.input_tokens"] == 21 + 300 and a["gen_ai.usage.output_tokens"] == 9
    assert a["gen_ai.usage.cache_read.input_tokens"] == 300
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    everything = b"".join(s.SerializeToString() for s in spans)
    assert PROMPT.encode() not in everything and ANSWER.encode() not in everything
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    } <= set(receiver.metrics)
