"""openai-node's zod helpers (`zodResponseFormat` with `parse` and the stream helper, `zodFunction` strict tools)
and the Vercel AI SDK (`ai` with `@ai-sdk/openai`: `generateText`, `streamText`, `generateObject`, `streamObject`
and a multi-step tool loop, each through the Responses API and chat completions) against the proxy under uvicorn and
the fake Anthropic. The Node
packages are pinned in tests/node and installed by `make test` (npm ci); without node or those packages the test is
skipped, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text, tool_use
from tests.paths import TESTS

NODE_DIR = TESTS / "node"
ANSWER = {"customer": "Ada", "items": [{"sku": "AB-12", "quantity": 2}], "discount": None, "express": True}


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: openai-node's helpers were NOT tested against the proxy")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.skip("tests/node has no node_modules (npm missing when `make test` ran?): openai-node NOT tested")
    return node


def run_node(script: str, url: str, *cases: str) -> dict[str, Any]:
    """Runs tests/node/`script` with `cases` against the proxy at `url`; {case: its result line}."""
    node = node_or_skip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    run = subprocess.run(
        [node, script, *cases], cwd=NODE_DIR, env={**env, "PROXY_URL": url}, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return {r["case"]: r for r in map(json.loads, run.stdout.splitlines())}


def test_openai_node_zod_helpers(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    fake.script(
        message(text(json.dumps(ANSWER))),
        message(text(json.dumps(ANSWER))),
        message(tool_use("toolu_1", "lookup", {"order_id": 7, "fields": ["status"]}), stop_reason="tool_use"),
    )
    results = run_node("clients.mjs", url, "parse", "stream", "tool")
    assert results["parse"] == {"case": "parse", "parsed": ANSWER}
    assert results["stream"] == {"case": "stream", "parsed": ANSWER}
    assert results["tool"] == {"case": "tool", "parsed": {"order_id": 7, "fields": ["status"]}}
    parse, stream, tool = fake.messages_requests
    schema = parse.body["output_config"]["format"]["schema"]
    assert '"maximum"' not in json.dumps(schema) and "{maxItems: 10}" in json.dumps(schema)
    assert stream.body["stream"] is True and stream.body["output_config"] == parse.body["output_config"]
    sent = tool.body["tools"][0]
    assert sent["strict"] is True and sent["input_schema"]["properties"]["order_id"] == {"type": "integer"}


def test_openai_node_responses_api(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    fake.script(
        message(text("Hello from Claude.")),
        message(text("Hello, streamed.")),
        message(text(json.dumps(ANSWER))),
    )
    results = run_node("clients.mjs", url, "responses", "responses_stream", "responses_parse")
    created = results["responses"]["parsed"]
    assert created["id"].startswith("resp_") and created["status"] == "completed"
    assert created["text"] == "Hello from Claude." and created["usage"] == 19
    streamed = results["responses_stream"]["parsed"]
    assert streamed["deltas"] > 1 and streamed["joined"] == streamed["text"] == "Hello, streamed."
    assert streamed["status"] == "completed"
    assert results["responses_parse"] == {"case": "responses_parse", "parsed": ANSWER}
    plain, stream, parse = fake.messages_requests
    assert plain.body["system"][0]["text"] == "Be brief." and stream.body["stream"] is True
    schema = parse.body["output_config"]["format"]["schema"]
    assert '"maximum"' not in json.dumps(schema) and "{maxItems: 10}" in json.dumps(schema)


def test_vercel_ai_sdk_text(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """The Vercel AI SDK's `generateText` and `streamText`, with `openai(model)` (the Responses API) and
    `openai.chat(model)` (chat completions)."""
    url = proxy()
    fake.script(*(message(text(f"Hello number {i}.")) for i in range(4)))
    results = run_vercel(url, "responses_text", "responses_stream", "chat_text", "chat_stream")
    assert results["responses_text"]["parsed"] == {"text": "Hello number 0.", "finish": "stop", "tokens": 19}
    stream = results["responses_stream"]["parsed"]
    assert stream["parts"] > 1 and stream["text"] == "Hello number 1." and stream["finish"] == "stop"
    assert results["chat_text"]["parsed"] == {"text": "Hello number 2.", "finish": "stop", "tokens": 19}
    stream = results["chat_stream"]["parsed"]
    assert stream["parts"] > 1 and stream["text"] == "Hello number 3." and stream["finish"] == "stop"
    responses_plain, responses_stream, chat_plain, chat_stream = fake.messages_requests
    assert "stream" not in responses_plain.body and responses_stream.body["stream"] is True
    assert "stream" not in chat_plain.body and chat_stream.body["stream"] is True


def run_vercel(url: str, *cases: str) -> dict[str, Any]:
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        pytest.skip("tests/node has no `ai` package: the Vercel AI SDK was NOT tested")
    return run_node("vercel.mjs", url, *cases)


def test_vercel_ai_sdk_objects(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """`generateObject` and `streamObject` with a zod schema (zod's `int()` and length bounds included) through both
    providers: the object parses, and what reached Anthropic is a schema it accepts (the fake refuses the rest)."""
    url = proxy()
    fake.script(*(message(text(json.dumps(dict(ANSWER, customer=f"Ada {i}")))) for i in range(4)))
    results = run_vercel(url, "responses_object", "responses_stream_object", "chat_object", "chat_stream_object")
    assert results["responses_object"] == {"case": "responses_object", "parsed": dict(ANSWER, customer="Ada 0")}
    streamed = results["responses_stream_object"]["parsed"]
    assert streamed["partials"] > 1 and streamed["object"] == dict(ANSWER, customer="Ada 1")
    assert results["chat_object"] == {"case": "chat_object", "parsed": dict(ANSWER, customer="Ada 2")}
    streamed = results["chat_stream_object"]["parsed"]
    assert streamed["partials"] > 1 and streamed["object"] == dict(ANSWER, customer="Ada 3")
    requests = fake.messages_requests
    assert len(requests) == 4
    for request in requests:
        schema = json.dumps(request.body["output_config"]["format"]["schema"])
        assert '"maximum"' not in schema and '"minLength"' not in schema and "{maxItems: 10}" in schema
    assert "stream" not in requests[0].body and requests[1].body["stream"] is True
    assert "stream" not in requests[2].body and requests[3].body["stream"] is True


def test_vercel_ai_sdk_tool_loop(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """`generateText` and `streamText` with a tool that has `execute` and `stopWhen: stepCountIs(3)`, through both
    providers: the SDK runs the tool on the model's arguments, sends its result back as a tool_result and returns
    the model's final text."""
    url = proxy()
    cases = ("responses_tools", "responses_stream_tools", "chat_tools", "chat_stream_tools")
    for i, _ in enumerate(cases):
        fake.script(
            message(tool_use(f"toolu_{i}", "lookup", {"order_id": 7 + i}), stop_reason="tool_use"),
            message(text(f"Order {7 + i} has shipped.")),
        )
    results = run_vercel(url, *cases)
    for i, case in enumerate(cases):
        expected = {"text": f"Order {7 + i} has shipped.", "steps": 2, "calls": [7 + i], "finish": "stop"}
        assert results[case] == {"case": case, "parsed": expected}
    requests = fake.messages_requests
    assert len(requests) == 2 * len(cases)
    for i, case in enumerate(cases):
        first, second = requests[2 * i], requests[2 * i + 1]
        (sent,) = first.body["tools"]
        assert sent["name"] == "lookup" and "strict" not in sent and second.body["tools"] == first.body["tools"]
        assert sent["input_schema"]["properties"]["order_id"]["type"] == "integer"
        assert second.body["messages"][1]["content"][0] == {
            "type": "tool_use",
            "id": f"toolu_{i}",
            "name": "lookup",
            "input": {"order_id": 7 + i},
        }
        result = second.body["messages"][2]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == f"toolu_{i}"
        assert f"shipped-{(7 + i) * 3}" in json.dumps(result["content"])
        assert ("stream" in first.body) == ("stream" in case) == ("stream" in second.body)


def test_vercel_ai_sdk_tool_loop_with_text_first(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """A step whose answer is text and then a tool call, through the Responses API. By default (`store` on) the SDK
    sends the text back as an `item_reference` to the id the proxy gave it, which the proxy resolves from the output
    items it keeps (`generateText`, and `streamText`, whose items are kept from the stream); with `store: false` it
    sends the text itself. Either way the loop completes and Anthropic gets the text and the tool call back in one
    assistant turn."""
    url = proxy()
    cases = ("responses_tools_preamble", "responses_stream_tools_preamble", "responses_tools_preamble_unstored")
    for i, _ in enumerate(cases):
        fake.script(
            message(
                text("Let me look that up."),
                tool_use(f"toolu_{i}", "lookup", {"order_id": 4 + i}),
                stop_reason="tool_use",
                id=f"msg_preamble{i}",
            ),
            message(text(f"Order {4 + i} has shipped."), id=f"msg_final{i}"),
        )
    results = run_vercel(url, *cases)
    for i, case in enumerate(cases):
        said = "Let me look that up." if "stream" in case else ""  # a text stream runs on across the steps
        expected = {"text": f"{said}Order {4 + i} has shipped.", "steps": 2, "calls": [4 + i], "finish": "stop"}
        assert results[case] == {"case": case, "parsed": expected}
    requests = fake.messages_requests
    assert len(requests) == 2 * len(cases)
    for i, case in enumerate(cases):
        first, second = requests[2 * i], requests[2 * i + 1]
        assert len(first.body["messages"]) == 1
        assert ("stream" in first.body) == ("stream" in case) == ("stream" in second.body)
        turns = second.body["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant", "user"]
        said, call = turns[1]["content"]
        assert (said["type"], said["text"]) == ("text", "Let me look that up.")
        assert (call["type"], call["id"], call["input"]) == ("tool_use", f"toolu_{i}", {"order_id": 4 + i})
        result = turns[2]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == f"toolu_{i}"
        assert f"shipped-{(4 + i) * 3}" in json.dumps(result["content"])


def test_vercel_ai_sdk_tool_loop_stops_at_step_count(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """A model that keeps calling the tool: `stopWhen: stepCountIs(3)` ends the loop after the third step, with every
    result fed back, through chat completions (`generateText`) and the Responses API (`streamText`)."""
    url = proxy()
    for i in range(6):
        fake.script(message(tool_use(f"toolu_{i}", "lookup", {"order_id": 10 + i}), stop_reason="tool_use"))
    results = run_vercel(url, "chat_tools_capped", "responses_stream_tools_capped")
    for j, case in enumerate(("chat_tools_capped", "responses_stream_tools_capped")):
        calls = [10 + 3 * j + k for k in range(3)]
        assert results[case] == {
            "case": case,
            "parsed": {"text": "", "steps": 3, "calls": calls, "finish": "tool-calls"},
        }
    requests = fake.messages_requests
    assert len(requests) == 6
    for j in (0, 1):
        last = requests[3 * j + 2].body["messages"]
        results_sent = [
            m["content"][0] for m in last if m["role"] == "user" and m["content"][0]["type"] == "tool_result"
        ]
        assert [r["tool_use_id"] for r in results_sent] == [f"toolu_{3 * j}", f"toolu_{3 * j + 1}"]
        assert f"shipped-{(10 + 3 * j + 1) * 3}" in results_sent[1]["content"]
