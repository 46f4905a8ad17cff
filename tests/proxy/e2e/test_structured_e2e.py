"""Structured output and strict tools end to end: the official openai SDK's `parse` and `stream` helpers with pydantic
models carrying real constraints -> the proxy under uvicorn -> the fake Anthropic, which refuses the schema keywords
the real API refuses. The SDK parses and validates the answer against the model itself."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from tests.conftest import API_KEY, ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text, tool_use


class LineItem(BaseModel):
    sku: str = Field(min_length=3, max_length=12, pattern=r"^[A-Z0-9-]+$")
    quantity: int = Field(ge=1, le=99)


class Order(BaseModel):
    customer: str = Field(description="Customer name", max_length=40)
    items: list[LineItem] = Field(min_length=1, max_length=10)
    discount: float | None = Field(ge=0, le=1)
    express: bool


class Lookup(BaseModel):
    """Look an order up."""

    order_id: int = Field(ge=1)
    fields: list[str] = Field(max_length=3)


ANSWER = {"customer": "Ada", "items": [{"sku": "AB-12", "quantity": 2}], "discount": None, "express": True}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)


def assert_strict_subset(schema: dict[str, object]) -> None:
    words = json.dumps(schema)
    for keyword in ("minimum", "maximum", "minLength", "maxLength", "maxItems"):
        assert f'"{keyword}"' not in words
    assert "{maxItems: 10}" in words  # the constraint travels as words in the description


def test_parse_with_a_constrained_pydantic_model(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text(json.dumps(ANSWER))))
    out = client(proxy()).chat.completions.parse(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Order 2 AB-12 for Ada"}],
        response_format=Order,
    )
    parsed = out.choices[0].message.parsed
    assert parsed == Order(customer="Ada", items=[LineItem(sku="AB-12", quantity=2)], discount=None, express=True)
    sent = fake.messages_requests[-1].body["output_config"]["format"]
    assert sent["type"] == "json_schema"
    assert_strict_subset(sent["schema"])


def test_stream_helper_with_response_format(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text(json.dumps(ANSWER))))
    with client(proxy()).chat.completions.stream(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Order"}], response_format=Order
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1 and "".join(deltas) == json.dumps(ANSWER)
    assert final.choices[0].message.parsed == Order.model_validate(ANSWER)
    assert fake.messages_requests[-1].body["stream"] is True


def test_beta_stream_helper_when_the_sdk_has_it(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    beta = getattr(getattr(client(proxy()).beta, "chat", None), "completions", None)
    if beta is None or not hasattr(beta, "stream"):
        pytest.skip("this openai SDK has no client.beta.chat.completions.stream")
    fake.script(message(text(json.dumps(ANSWER))))
    with beta.stream(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Order"}], response_format=Order
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Order.model_validate(ANSWER)


def test_strict_function_tool(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(tool_use("toolu_1", "Lookup", {"order_id": 7, "fields": ["status"]}), stop_reason="tool_use"))
    tool = openai.pydantic_function_tool(Lookup)  # marks the tool strict, as the Agents SDK and zod helpers do
    out = client(proxy()).chat.completions.parse(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Where is order 7?"}], tools=[tool]
    )
    call = out.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.parsed_arguments == Lookup(order_id=7, fields=["status"])
    sent = fake.messages_requests[-1].body["tools"][0]
    assert sent["strict"] is True and sent["name"] == "Lookup"
    assert sent["input_schema"]["properties"]["order_id"] == {
        "type": "integer",
        "title": "Order Id",
        "description": "{minimum: 1}",
    }


def test_a_model_without_structured_outputs_answers_through_a_forced_tool(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    fake.script(message(tool_use("toolu_1", "json_response", ANSWER), stop_reason="tool_use"))
    out = client(proxy()).chat.completions.parse(
        model="claude-3-5-haiku-20241022", messages=[{"role": "user", "content": "Order"}], response_format=Order
    )
    assert out.choices[0].message.parsed == Order.model_validate(ANSWER)
    assert out.choices[0].finish_reason == "stop"
    body = fake.messages_requests[-1].body
    assert "output_config" not in body and body["tool_choice"]["name"] == "json_response"


def test_the_fake_refuses_what_the_proxy_used_to_send(fake: FakeAnthropic) -> None:
    """The stand-in is strict enough that the untransformed schema would fail: the same request, sent directly."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
        "output_config": {"format": {"type": "json_schema", "schema": to_strict_json_schema(Order)}},
    }
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    response = httpx.post(f"{fake.url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("output_config.format.schema: For 'string' type, property")


def test_logprobs_are_refused_naming_the_parameter(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy())
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}], logprobs=True)
    assert info.value.param == "logprobs" and "logprobs" in info.value.message
    assert fake.messages_requests == []  # refused before anything went upstream
    out = c.chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}], logprobs=False, seed=3
    )
    assert out.choices[0].message.content == "Hello from the fake."


def test_strict_function_tool_streamed(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(tool_use("toolu_1", "Lookup", {"order_id": 7, "fields": ["a", "b"]}), stop_reason="tool_use"))
    with client(proxy()).chat.completions.stream(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Where is order 7?"}],
        tools=[openai.pydantic_function_tool(Lookup)],
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.parsed_arguments == Lookup(order_id=7, fields=["a", "b"])
    assert final.choices[0].finish_reason == "tool_calls"
    assert fake.messages_requests[-1].body["tools"][0]["strict"] is True
