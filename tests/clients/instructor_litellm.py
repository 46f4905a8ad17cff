"""instructor and litellm as clients of the proxy at PROXY_URL. instructor: `from_openai` on the official SDK's
client, a pydantic `response_model` in its default TOOLS mode and in JSON_SCHEMA mode, whole and streamed as partial
objects (`create_partial`). litellm: `completion` with
`model="openai/<model>"` and `api_base`, plain, streamed, and with a tool whose result is fed back; its shipped cost
map and tokenizers only (guard.py's audit hook records any try at the network)."""

from __future__ import annotations

import json
from typing import Any

from guard import MODEL, PROXY, run
from shapes import Order, weather

# isort: split
# after guard, whose offline switches (LITELLM_LOCAL_MODEL_COST_MAP) litellm reads as it is imported
import instructor
import litellm
from openai import OpenAI

ASK = [{"role": "user", "content": "Ada wants two AB-12, express."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
LITELLM = {"model": f"openai/{MODEL}", "api_base": PROXY, "api_key": "unused"}


def extract(mode: instructor.Mode | None) -> dict[str, Any]:
    client = OpenAI(base_url=PROXY, api_key="unused")
    patched = instructor.from_openai(client) if mode is None else instructor.from_openai(client, mode=mode)
    order = patched.chat.completions.create(model=MODEL, response_model=Order, messages=ASK)  # type: ignore[arg-type]
    return {"mode": patched.mode.value, "order": order.model_dump()}


def partials(mode: instructor.Mode | None) -> dict[str, Any]:
    """The order streamed: instructor rebuilds a partial object from each chunk; the last one is whole."""
    client = OpenAI(base_url=PROXY, api_key="unused")
    patched = instructor.from_openai(client) if mode is None else instructor.from_openai(client, mode=mode)
    seen = [
        part.model_dump()
        for part in patched.chat.completions.create_partial(model=MODEL, response_model=Order, messages=ASK)  # type: ignore[arg-type]
    ]
    return {"mode": patched.mode.value, "partials": len(seen) > 1, "last": seen[-1]}


async def tools_mode() -> object:
    return extract(None)


async def json_schema_mode() -> object:
    return extract(instructor.Mode.JSON_SCHEMA)


async def tools_mode_partial() -> object:
    return partials(None)


async def json_schema_mode_partial() -> object:
    return partials(instructor.Mode.JSON_SCHEMA)


async def completion() -> object:
    reply = litellm.completion(messages=[{"role": "user", "content": "Say hello."}], **LITELLM)
    return {"text": reply.choices[0].message.content, "usage": reply.usage.total_tokens > 0}


async def stream() -> object:
    chunks = list(litellm.completion(messages=[{"role": "user", "content": "Say hello."}], stream=True, **LITELLM))
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


async def tool() -> object:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = litellm.completion(messages=messages, tools=[WEATHER_TOOL], **LITELLM).choices[0]
    messages.append(first.message.model_dump())
    calls = first.message.tool_calls or []
    for call in calls:
        city = json.loads(call.function.arguments)["city"]
        messages.append({"role": "tool", "tool_call_id": call.id, "content": weather(city)})
    answer = litellm.completion(messages=messages, tools=[WEATHER_TOOL], **LITELLM).choices[0].message.content
    return {"finish": first.finish_reason, "calls": [c.function.name for c in calls], "answer": answer}


async def tool_stream() -> object:
    chunks = list(
        litellm.completion(
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
            **LITELLM,
        )
    )
    message = litellm.stream_chunk_builder(chunks).choices[0].message
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


async def tokens() -> object:
    """Counts tokens with tiktoken, from the encodings litellm ships (it points TIKTOKEN_CACHE_DIR at them)."""
    import os

    count = litellm.token_counter(model=f"openai/{MODEL}", messages=[{"role": "user", "content": "Say hello."}])
    bundled = os.environ["TIKTOKEN_CACHE_DIR"].startswith(os.path.dirname(litellm.__file__))
    return {"count": count > 0, "bundled": bundled}


if __name__ == "__main__":
    import asyncio

    asyncio.run(
        run(
            {
                "tools_mode": tools_mode,
                "json_schema_mode": json_schema_mode,
                "tools_mode_partial": tools_mode_partial,
                "json_schema_mode_partial": json_schema_mode_partial,
                "completion": completion,
                "stream": stream,
                "tool": tool,
                "tool_stream": tool_stream,
                "tokens": tokens,
            }
        )
    )
