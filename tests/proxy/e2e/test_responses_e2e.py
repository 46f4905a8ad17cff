"""POST /v1/responses end to end: the official openai SDK's `responses.create`, `responses.stream` (with its own
accumulation, `get_final_response`) and `responses.parse` -> the proxy under uvicorn -> the fake Anthropic."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests import paths
from tests.conftest import ProxyFactory, metric_samples
from tests.fakes.anthropic import RESET, ErrorReply, FakeAnthropic, message, render_sse, text, thinking, tool_use

FIXTURES = paths.FIXTURES / "sse"
MODEL = "claude-sonnet-4-6"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)


def test_create_with_string_input(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    usage = {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 2}
    fake.script(message(text("Hello!"), usage=usage))
    url = proxy()
    response = client(url).responses.create(
        model=MODEL, input="Say hello", instructions="Be brief.", max_output_tokens=64, metadata={"run": "1"}
    )
    assert response.object == "response" and response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == "Hello!"
    assert response.metadata == {"run": "1"} and response.instructions == "Be brief."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (41, 4, 45)
    assert response.usage.input_tokens_details.cached_tokens == 30
    sent = fake.messages_requests[-1].body
    assert sent["max_tokens"] == 64 and sent["system"][0]["text"] == "Be brief."
    assert sent["messages"][0]["content"][0]["text"] == "Say hello"
    samples = metric_samples(url)
    assert samples[f'proxy_requests_total{{model="{MODEL}",route="/v1/responses",status="200"}}'] == 1


def test_tool_round_trip_with_function_call_output(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        message(text("Checking."), tool_use("toolu_01", "weather", {"city": "Oslo"}), stop_reason="tool_use"),
        message(text("Rainy in Oslo.")),
    )
    api = client(proxy())
    items: list[Any] = [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}]
    first = api.responses.create(model=MODEL, input=items, tools=[WEATHER], tool_choice="auto")
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("weather", {"city": "Oslo"})]
    items += first.output
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"sky": "rain"}'})
    second = api.responses.create(model=MODEL, input=items, tools=[WEATHER])
    assert second.output_text == "Rainy in Oslo."
    turns = fake.messages_requests[-1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    assert turns[2]["content"][0]["type"] == "tool_result" and turns[2]["content"][0]["tool_use_id"] == "toolu_01"


def test_parse_with_a_pydantic_text_format(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text('{"name": "Ada", "age": 36}')))
    parsed = client(proxy()).responses.parse(model=MODEL, input="Who?", text_format=Person)
    assert parsed.output_parsed == Person(name="Ada", age=36)
    sent = fake.messages_requests[-1].body["output_config"]["format"]
    words = json.dumps(sent["schema"])
    assert sent["type"] == "json_schema" and '"maximum"' not in words and "maximum: 150" in words


def test_json_object_text_format(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(tool_use("toolu_j", "json_response", {"ok": True}), stop_reason="tool_use"))
    response = client(proxy()).responses.create(
        model=MODEL, input="JSON please", text={"format": {"type": "json_object"}}
    )
    assert json.loads(response.output_text) == {"ok": True}


def test_reasoning_comes_back_as_a_summary_item(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(thinking("Two and two make four."), text("4")))
    response = client(proxy()).responses.create(
        model=MODEL, input="2+2?", reasoning={"effort": "medium", "summary": "auto"}
    )
    reasoning, answer = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Two and two make four."
    assert answer.type == "message" and response.output_text == "4"
    assert fake.messages_requests[-1].body["thinking"] == {"type": "adaptive"}


@pytest.mark.parametrize(
    ("extra", "status", "words"),
    [
        ({"previous_response_id": "resp_abc"}, 400, "send the whole conversation"),
        ({"tools": [{"type": "web_search"}]}, 400, "'web_search'"),
        ({"temperature": 3}, 400, "temperature"),
    ],
)
def test_refusals_are_openai_errors(
    fake: FakeAnthropic, proxy: ProxyFactory, extra: dict[str, Any], status: int, words: str
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy()).responses.create(model=MODEL, input="hi", **extra)
    assert info.value.status_code == status and words in info.value.message
    assert fake.messages_requests == []


def test_upstream_errors_keep_their_status(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(ErrorReply(429, "rate_limit_error", "Number of requests has exceeded your rate limit"))
    with pytest.raises(openai.RateLimitError) as info:
        client(proxy(PROXY_MAX_RETRIES="0")).responses.create(model=MODEL, input="hi")
    assert info.value.status_code == 429 and "rate limit" in info.value.message


def test_stream_with_the_sdk_accumulation(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        message(thinking("Look it up."), text("One moment."), tool_use("toolu_7", "weather", {"city": "Rome"}),
                stop_reason="tool_use")
    )  # fmt: skip
    with client(proxy()).responses.stream(model=MODEL, input="Weather in Rome?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.reasoning_summary_text.delta", "response.function_call_arguments.delta"):
        assert kind in kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "One moment."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output_text == "One moment."
    call = final.output[2]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Rome"} and call.call_id == "toolu_7"
    assert fake.messages_requests[-1].body["stream"] is True


def test_stream_parse_with_text_format(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text('{"name": "Bo", "age": 7}')))
    with client(proxy()).responses.stream(model=MODEL, input="Who?", text_format=Person) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Person(name="Bo", age=7)


def test_stream_failure_after_output_is_response_failed(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script({**message(text("x")), "_events": [(FIXTURES / "error_overloaded.sse").read_bytes()]})
    with client(proxy()).responses.stream(model=MODEL, input="hi") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and "Overloaded" in events[-1].response.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Partial ånswer"


def test_stream_reset_after_output_is_response_failed(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    events = list(render_sse(message(text("a long answer, cut"))))
    fake.script({**message(text("x")), "_events": [*events[:5], RESET]})
    with client(proxy(PROXY_MAX_RETRIES="0")).responses.stream(model=MODEL, input="hi") as stream:
        got = list(stream)
    assert got[-1].type == "response.failed" and len(fake.messages_requests) == 1


def test_early_stream_failure_is_retried_invisibly(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(ErrorReply(529, "overloaded_error", "Overloaded"), message(text("fine")))
    with client(proxy(PROXY_RETRY_MAX_WAIT="5")).responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "fine" and len(fake.messages_requests) == 2


def test_raw_stream_has_event_names_and_no_done_line(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("hey")))
    with httpx.stream(
        "POST", f"{proxy()}/responses", json={"model": MODEL, "input": "hi", "stream": True}, timeout=20
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        body = reply.read().decode()
    blocks = [b for b in body.split("\n\n") if b]
    for block in blocks:
        name, data = block.split("\n")
        assert name.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in body and blocks[-1].startswith("event: response.completed")


def test_inbound_keys_are_enforced(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS="inbound-key-number-1")
    with pytest.raises(openai.AuthenticationError):
        client(url).responses.create(model=MODEL, input="hi")
    keyed = openai.OpenAI(base_url=f"{url}/v1", api_key="inbound-key-number-1", max_retries=0, timeout=20)
    assert keyed.responses.create(model=MODEL, input="hi").output_text == "Hello from the fake."
    assert all("inbound-key-number-1" not in json.dumps(r.headers) for r in fake.messages_requests)


def test_oversized_body_is_413(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy(PROXY_MAX_BODY_BYTES="2000")).responses.create(model=MODEL, input="x" * 5000)
    assert info.value.status_code == 413 and fake.messages_requests == []


def test_client_disconnect_closes_the_upstream_stream(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    head = list(render_sse(message(text("first words"))))
    fake.script({**message(text("x")), "_events": [*head[:-3], 30.0]})
    stream = client(proxy()).responses.create(model=MODEL, input="hi", stream=True)
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            break
    assert kinds[0] == "response.created"
    assert wait_for(lambda: fake.open_streams == 1)
    stream.close()
    assert wait_for(lambda: fake.open_streams == 0 and fake.disconnects == 1, timeout=3.0)


def test_stalled_stream_after_output_is_response_failed(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    head = list(render_sse(message(text("first words"))))
    fake.script({**message(text("x")), "_events": [*head[:-3], 5.0]})
    with client(proxy(PROXY_STREAM_IDLE_TIMEOUT="0.5")).responses.stream(model=MODEL, input="hi") as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and "stalled" in events[-1].response.error.message


def test_access_line_for_a_streamed_response(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    fake.script(message(text("logged"), usage={"input_tokens": 5, "output_tokens": 3}))
    with client(proxy()).responses.stream(model=MODEL, input="secret prompt words") as stream:
        stream.get_final_response()
    assert wait_for(lambda: any(getattr(r, "access", {}).get("route") == "/v1/responses" for r in caplog.records))
    line = next(r.access for r in caplog.records if getattr(r, "access", {}).get("route") == "/v1/responses")
    assert (line["status"], line["stream"], line["model"]) == (200, True, MODEL)
    assert (line["input_tokens"], line["output_tokens"], line["error"]) == (5, 3, None)
    assert line["upstream_request_id"] and all("secret prompt" not in r.getMessage() for r in caplog.records)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# ---- item references: the proxy's own output items, kept in memory --------------------------------------------------


def reference(item_id: str) -> dict[str, str]:
    return {"type": "item_reference", "id": item_id}


def refused(api: openai.OpenAI, items: list[Any], **extra: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(model=MODEL, input=items, tools=[WEATHER], **extra)
    return info.value


def test_item_references_to_an_answer_resolve_to_its_output(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """The next step sends the first answer's text and tool call back as references (as a client with `store` on
    does): Anthropic gets them back as one assistant turn, text then tool_use, before the tool's result."""
    fake.script(
        message(text("Checking."), tool_use("toolu_r1", "weather", {"city": "Oslo"}), stop_reason="tool_use",
                id="msg_refs01"),
        message(text("Rainy in Oslo.")),
    )  # fmt: skip
    url = proxy()
    api = client(url)
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = api.responses.create(model=MODEL, input=[question], tools=[WEATHER])
    said, call = first.output
    assert (said.type, call.type) == ("message", "function_call")
    samples = metric_samples(url)
    assert samples["proxy_responses_store_items"] == 2 and samples["proxy_responses_store_bytes"] > 0
    output = {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "rain"}'}
    second = api.responses.create(
        model=MODEL, input=[question, reference(said.id), reference(call.id), output], tools=[WEATHER]
    )
    assert second.output_text == "Rainy in Oslo."
    turns = fake.messages_requests[-1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use"]
    assert turns[1]["content"][0]["text"] == "Checking."
    assert {k: turns[1]["content"][1][k] for k in ("id", "name", "input")} == {
        "id": "toolu_r1",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    assert turns[2]["content"][0]["tool_use_id"] == "toolu_r1"


def test_item_references_to_a_streamed_answer_resolve(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """A streamed answer's items are kept once it completed: a reference to its reasoning stands for nothing (as
    reasoning input always does), its text and tool call come back as the assistant turn."""
    fake.script(
        message(thinking("Rome, then."), text("One moment."), tool_use("toolu_s1", "weather", {"city": "Rome"}),
                stop_reason="tool_use", id="msg_refs02"),
        message(text("Sunny in Rome.")),
    )  # fmt: skip
    api = client(proxy())
    question = {"role": "user", "content": "Weather in Rome?"}
    with api.responses.stream(model=MODEL, input=[question], tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    thought, said, call = final.output
    assert [i.type for i in final.output] == ["reasoning", "message", "function_call"]
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    items = [question, reference(thought.id), reference(said.id), reference(call.id), output]
    assert api.responses.create(model=MODEL, input=items, tools=[WEATHER]).output_text == "Sunny in Rome."
    turns = fake.messages_requests[-1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [(b["type"], b.get("text") or b.get("id")) for b in turns[1]["content"]] == [
        ("text", "One moment."),
        ("tool_use", "toolu_s1"),
    ]


def test_an_item_resolves_only_for_the_inbound_key_that_asked_for_it(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """With PROXY_API_KEYS, one key's output items are not another key's to reference: the same id is unknown to it."""
    fake.script(message(text("For the first key."), id="msg_owned1"), message(text("Again.")))
    url = proxy(PROXY_API_KEYS="inbound-key-number-a,inbound-key-number-b")
    first, second = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)
        for key in ("inbound-key-number-a", "inbound-key-number-b")
    )
    said = first.responses.create(model=MODEL, input="hi").output[0]
    question = {"role": "user", "content": "and?"}
    error = refused(second, [question, reference(said.id)])
    assert error.body["param"] == "input[1].id" and "not (or no longer) held" in error.body["message"]
    assert first.responses.create(model=MODEL, input=[question, reference(said.id)]).output_text == "Again."
    assert fake.messages_requests[-1].body["messages"][1]["content"][0]["text"] == "For the first key."


def test_an_unknown_item_reference_is_a_400_naming_it(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    error = refused(client(proxy()), [{"role": "user", "content": "hi"}, reference("msg_elsewhere_0")])
    assert error.status_code == 400 and error.param == "input[1].id"
    assert "'msg_elsewhere_0' is not (or no longer) held by this proxy" in error.message
    assert "send the full item" in error.message and "`store: false`" in error.message
    assert fake.messages_requests == []


def test_store_false_keeps_nothing(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("Not kept."), id="msg_refs03"), message(text("Not kept either."), id="msg_refs04"))
    url = proxy()
    api = client(url)
    first = api.responses.create(model=MODEL, input="hi", store=False)
    with api.responses.stream(model=MODEL, input="hi", store=False) as stream:
        streamed = stream.get_final_response()
    assert metric_samples(url)["proxy_responses_store_items"] == 0
    for item in (first.output[0], streamed.output[0]):
        error = refused(api, [{"role": "user", "content": "hi"}, reference(item.id)])
        assert error.param == "input[1].id" and "no longer) held" in error.message
    assert len(fake.messages_requests) == 2


def test_a_stream_cut_by_an_error_keeps_nothing(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    """A stream cut after its first item was done (the connection reset before message_stop) ends in
    response.failed, and even that finished item is not kept."""
    events = list(render_sse(message(text("Done part."), text("more"), id="msg_refs06")))
    fake.script({**message(text("x")), "_events": [*events[:8], RESET]})
    api = client(proxy(PROXY_MAX_RETRIES="0"))
    with api.responses.stream(model=MODEL, input="hi") as stream:
        got = list(stream)
    assert got[-1].type == "response.failed"
    (said,) = [e.item for e in got if e.type == "response.output_item.done"]
    assert said.type == "message" and said.content[0].text == "Done part."  # type: ignore[union-attr]
    assert refused(api, [{"role": "user", "content": "hi"}, reference(said.id)]).param == "input[1].id"


def test_with_the_store_off_references_are_refused_as_before(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("Said once."), id="msg_refs05"))
    url = proxy(PROXY_RESPONSES_STORE_MB="0")
    api = client(url)
    first = api.responses.create(model=MODEL, input="hi")
    error = refused(api, [{"role": "user", "content": "hi"}, reference(first.output[0].id)])
    assert error.param == "input[1].type" and "PROXY_RESPONSES_STORE_MB=0" in error.message
    assert "turn `store` off" in error.message
    assert metric_samples(url)["proxy_responses_store_items"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_is_a_503_with_its_retry_after(fake: FakeAnthropic, proxy: ProxyFactory, stream: bool) -> None:
    fake.script(ErrorReply(529, "overloaded_error", "Overloaded", headers={"retry-after": "4"}))
    c = client(proxy(PROXY_MAX_RETRIES="0"))
    with pytest.raises(openai.InternalServerError) as info:
        if stream:
            with c.responses.stream(model=MODEL, input="hi") as events:
                list(events)
        else:
            c.responses.create(model=MODEL, input="hi")
    assert info.value.status_code == 503
    assert info.value.code == "overloaded_error"
    assert info.value.response.headers["retry-after"] == "4"
