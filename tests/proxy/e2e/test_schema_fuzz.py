"""Schema-driven fuzzing of the public routes with schemathesis, against the real app (under uvicorn) in front of the
strict fake Anthropic. Bounded by examples, not time: SCHEMA_FUZZ_EXAMPLES chat requests per mode (default 60;
CI runs 150, the size this suite was written with). Generating schema-breaking chat bodies is what costs (about a
third of a second each here, against milliseconds for the request itself).

Beyond "no 5xx", two checks of our own: validation errors are OpenAI-style 400s (never a framework's 422 list; on
the /v1/messages passthrough, Anthropic-style), and the fake never refuses a request the proxy built (a 400 carrying
Anthropic's request id would mean the proxy translated a request it accepted into one Anthropic rejects).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic


def openai_style_errors(ctx: Any, response: Any, case: Any) -> bool:
    assert response.status_code != 422, "validation errors must be 400 envelopes"
    if case.path.startswith("/v1/messages"):  # Anthropic's API, passed through: its bodies go upstream unchanged
        if response.status_code >= 400:
            body = response.json()
            assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body
        return True
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if response.status_code == 400 and "x-upstream-request-id" in response.headers:
        raise AssertionError(f"Anthropic (the strict fake) refused what the proxy built: {response.text}")
    return True


EXAMPLES = {
    "POST /v1/chat/completions": int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "60")),
    "POST /v1/responses": 20,
    "POST /v1/messages": 10,
    "POST /v1/messages/count_tokens": 5,
    "GET /v1/models": 10,
    "GET /v1/models/{model}": 10,
    "GET /health": 5,
    "GET /readyz": 5,
}


# Negative cases (bodies that break the schema) exist only where there is a body.
CASES = [(label, "positive") for label in sorted(EXAMPLES)] + [("POST /v1/chat/completions", "negative")]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_public_routes(fake: FakeAnthropic, proxy: ProxyFactory, label: str, mode: str) -> None:
    url = proxy(PROXY_MAX_RETRIES="0", PROXY_DEFAULT_MODEL="claude-sonnet-4-6")
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    assert set(operations) == set(EXAMPLES)  # every public route is in the schema, and nothing else
    operation = operations[label]
    statuses: Counter[int] = Counter()

    @settings(max_examples=EXAMPLES[label], deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case: Any) -> None:
        response = case.call(timeout=20)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=(not_a_server_error,), additional_checks=(openai_style_errors,))

    run()
    if label == "POST /v1/chat/completions":
        # the fuzzing reached the upstream (positive) and the validation (both) rather than stopping at the door
        assert statuses[400] > 0
        if mode == "positive":
            assert statuses[200] > 0, statuses
