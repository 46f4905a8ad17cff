"""Python client libraries in their default modes against the proxy under uvicorn and the fake Anthropic, each in
its own pinned environment (tests/clients/requirements-*.txt, built by `make clients`, which `make test` runs), each
running all its scenarios in one subprocess (tests/clients/*.py) that may reach only the loopback. Without its
environment a library's test is skipped, saying so.

The fake plays the model: `answer` calls the weather tool when one is offered and not yet answered, repeats the
tool's result once it is, and answers the order as JSON when asked for structured output (as text for
`output_config.format`, as the forced or only tool's input otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, Recorded, message, text, tool_use
from tests.paths import TESTS

pytestmark = pytest.mark.slow

CLIENTS = TESTS / "clients"
VENVS = CLIENTS.parent.parent / ".venv-clients"
ORDER = {"customer": "Ada", "items": [{"sku": "AB-12", "quantity": 2}], "express": True}
WEATHER = "sunny, 21 C in Paris"


def _results(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for msg in messages:
        for block in msg["content"] if isinstance(msg["content"], list) else []:
            if block.get("type") == "tool_result":
                inner = block.get("content", "")
                out.append(inner if isinstance(inner, str) else "".join(b.get("text", "") for b in inner))
    return out


def answer(record: Recorded) -> dict[str, Any]:
    body = record.body
    tools = [t["name"] for t in body.get("tools", [])]
    results = _results(body["messages"])
    if results:
        return message(text(f"The tool said: {results[-1]}"))
    weather = [name for name in tools if "weather" in name.lower()]
    if weather:
        return message(tool_use("toolu_w1", weather[0], {"city": "Paris"}), stop_reason="tool_use")
    if "format" in body.get("output_config", {}):
        return message(text(json.dumps(ORDER)))
    choice = body.get("tool_choice") or {}
    if tools and (choice.get("type") in ("tool", "any") or len(tools) == 1):
        return message(tool_use("toolu_o1", choice.get("name") or tools[0], ORDER), stop_reason="tool_use")
    return message(text("Hello from Claude."))


def run_client(env_name: str, script: str, fake: FakeAnthropic, url: str) -> dict[str, Any]:
    """Runs tests/clients/`script` in the environment `env_name`; returns {case: parsed} and asserts every case
    answered and nothing tried to leave the loopback."""
    python = VENVS / env_name / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no {python} (make clients could not build it?): {script} was NOT tested against the proxy")
    fake.default = answer
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "LITELLM_"))}
    run = subprocess.run(
        [str(python), script],
        cwd=CLIENTS,
        env={**env, "PROXY_URL": url, "NO_PROXY": "*", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    errors = {line["case"]: line["error"] for line in lines if "error" in line}
    assert not errors, f"{errors}\n{run.stderr}"
    results = {line["case"]: line["parsed"] for line in lines}
    assert results.pop("network") == []
    return results


def test_openai_agents_sdk(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """openai-agents: `Agent` with the default model (the Responses API), a strict function tool run and its result
    fed back, and `output_type` structured output; `Runner.run` and `Runner.run_streamed`."""
    results = run_client("agents", "agents_sdk.py", fake, proxy())
    assert results["tool"] == f"The tool said: {WEATHER}"
    assert results["tool_stream"] == {"output": f"The tool said: {WEATHER}", "deltas": True}
    assert results["output"] == results["output_stream"] == ORDER
    call, answered, call_s, answered_s, output, output_s = fake.messages_requests
    sent = call.body["tools"][0]
    assert sent["name"] == "get_weather" and sent["strict"] is True
    assert sent["input_schema"]["required"] == ["city"] and sent["input_schema"]["additionalProperties"] is False
    assert _results(answered.body["messages"]) == [WEATHER] and answered.body["system"][0]["text"] == "Answer briefly."
    assert call_s.body["stream"] is True and answered_s.body["stream"] is True and "stream" not in call.body
    schema = output.body["output_config"]["format"]["schema"]
    assert schema["required"] == ["customer", "items", "express"] and output_s.body["stream"] is True


def test_pydantic_ai(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """pydantic-ai: `Agent("openai:<model>")` (its default OpenAI model class), a function tool run and its result fed
    back, `output_type` a pydantic model (its default tool output); `run` and `run_stream`."""
    results = run_client("agents", "pydantic_ai_agent.py", fake, proxy())
    assert results["model"] == "OpenAIResponsesModel"  # "openai:" means the Responses API
    assert results["tool"] == results["tool_stream"] == f"The tool said: {WEATHER}"
    assert results["output"] == results["output_stream"] == ORDER
    call, answered, call_s, answered_s, output, output_s = fake.messages_requests
    sent = call.body["tools"][0]
    assert sent["name"] == "get_weather" and sent["input_schema"]["required"] == ["city"]
    assert _results(answered.body["messages"]) == [WEATHER] and answered.body["system"][0]["text"] == "Answer briefly."
    assert call_s.body["stream"] is True and answered_s.body["stream"] is True and "stream" not in call.body
    final = output.body["tools"][0]  # its default output mode: a tool the model must call
    assert final["name"] == output_s.body["tools"][0]["name"] == "final_result"
    assert final["input_schema"]["required"] == ["customer", "items", "express"] and output_s.body["stream"] is True


def test_langchain_openai(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """langchain-openai: `ChatOpenAI` `invoke` and `stream`, `bind_tools` with a tool round trip,
    `with_structured_output(PydanticModel)`, and `ChatOpenAI(reasoning=...)` (the Responses API)."""
    results = run_client("agents", "langchain_openai_chat.py", fake, proxy())
    assert results.pop("responses_api") == {"chat": False, "reasoning": True}
    tool_answer = {"calls": ["get_weather"], "answer": f"The tool said: {WEATHER}"}
    assert results == {
        **{case: "Hello from Claude." for case in ("invoke", "stream", "responses_invoke", "responses_stream")},
        **{"tool": tool_answer, "responses_tool": tool_answer, "structured": ORDER},
    }
    invoke, stream, call, answered, structured, r_invoke, r_stream, r_call, r_answered = fake.messages_requests
    assert stream.body["stream"] is True and "stream" not in invoke.body and "thinking" not in invoke.body
    assert call.body["tools"][0]["name"] == r_call.body["tools"][0]["name"] == "get_weather"
    assert _results(answered.body["messages"]) == _results(r_answered.body["messages"]) == [WEATHER]
    schema = structured.body["output_config"]["format"]["schema"]  # its default method: json_schema
    assert schema["required"] == ["customer", "items", "express"] and "tools" not in structured.body
    for sent in (r_invoke, r_stream, r_call):  # reasoning={"effort": "low"} reached Anthropic as thinking
        assert sent.body["thinking"] == {"type": "adaptive"} and sent.body["output_config"] == {"effort": "low"}
    assert r_stream.body["stream"] is True and "thinking" not in r_answered.body  # none in the middle of a tool loop


def test_instructor_and_litellm(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """instructor: `from_openai` with a `response_model` in its default TOOLS mode and in JSON_SCHEMA mode, whole and
    streamed (`create_partial`). litellm as a client: `completion` plain, streamed, and with a tool round trip,
    nothing reaching the network."""
    results = run_client("instructor", "instructor_litellm.py", fake, proxy())
    assert results == {
        "tools_mode": {"mode": "tool_call", "order": ORDER},
        "json_schema_mode": {"mode": "json_schema_mode", "order": ORDER},
        "tools_mode_partial": {"mode": "tool_call", "partials": True, "last": ORDER},
        "json_schema_mode_partial": {"mode": "json_schema_mode", "partials": True, "last": ORDER},
        "completion": {"text": "Hello from Claude.", "usage": True},
        "stream": "Hello from Claude.",
        "tool": {"finish": "tool_calls", "calls": ["get_weather"], "answer": f"The tool said: {WEATHER}"},
        "tool_stream": [["get_weather", {"city": "Paris"}]],
        "tokens": {"count": True, "bundled": True},  # tiktoken ran, from files on disk (network: [] above)
    }
    tools, schema, tools_s, schema_s, plain, stream, call, answered, call_s = fake.messages_requests
    for sent, name in ((tools, "Order"), (tools_s, "PartialOrder")):  # instructor names the streamed model so
        assert sent.body["tools"][0]["name"] == name and sent.body["tool_choice"] == {"type": "tool", "name": name}
    for sent in (schema, schema_s):
        assert sent.body["output_config"]["format"]["schema"]["required"] == ["customer", "items", "express"]
        assert "tools" not in sent.body
    assert tools_s.body["stream"] is True and schema_s.body["stream"] is True and "stream" not in tools.body
    assert stream.body["stream"] is True and "stream" not in plain.body and call_s.body["stream"] is True
    assert call.body["tools"][0]["name"] == "get_weather" and _results(answered.body["messages"]) == [WEATHER]


def test_llamaindex(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """llama-index: `OpenAILike` `chat`, `stream_chat`, `chat_with_tools` round trip, `predict_and_call`,
    `structured_predict`."""
    results = run_client("llamaindex", "llamaindex_llm.py", fake, proxy())
    assert results == {
        "chat": "Hello from Claude.",
        "stream_chat": "Hello from Claude.",
        "tool": {"calls": ["get_weather"], "answer": f"The tool said: {WEATHER}"},
        "predict_and_call": WEATHER,  # the tool's own output: predict_and_call does not ask the model again
        "structured": ORDER,
    }
    chat, stream, call, answered, predict, structured = fake.messages_requests
    assert stream.body["stream"] is True and "stream" not in chat.body and chat.body["temperature"] == 0.1
    assert call.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}  # parallel_tool_calls=False
    assert call.body["tools"][0]["name"] == predict.body["tools"][0]["name"] == "get_weather"
    assert _results(answered.body["messages"]) == [WEATHER]
    order = structured.body["tools"][0]  # its default for function-calling models: the schema as a tool
    assert order["name"] == "Order" and order["input_schema"]["required"] == ["customer", "items", "express"]
    assert structured.body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}  # "required"
