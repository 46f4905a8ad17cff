"""langchain-openai in its default modes against the proxy at PROXY_URL: `ChatOpenAI` (Chat Completions) `invoke`
and `stream`, `bind_tools` with the tool's result fed back, `with_structured_output` of a pydantic model (its
default method), and `ChatOpenAI(reasoning=...)`, which switches it to the Responses API."""

from __future__ import annotations

from typing import Any

from guard import MODEL, PROXY, run
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from shapes import Order, weather


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


chat = ChatOpenAI(model=MODEL, base_url=PROXY, api_key="unused")  # type: ignore[arg-type]
responses = ChatOpenAI(
    model=MODEL,
    base_url=PROXY,
    api_key="unused",  # type: ignore[arg-type]
    reasoning={"effort": "low", "summary": "auto"},
)


async def apis() -> object:
    return {"chat": chat._use_responses_api({}), "reasoning": responses._use_responses_api({})}


async def invoke() -> object:
    return (await chat.ainvoke("Say hello.")).content


async def stream() -> object:
    chunks = [chunk.content async for chunk in chat.astream("Say hello.")]
    return "".join(str(c) for c in chunks)


async def tool_round() -> object:
    bound = chat.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    ai = await bound.ainvoke(messages)
    messages.append(ai)
    for call in ai.tool_calls:
        messages.append(ToolMessage(str(get_weather.invoke(call["args"])), tool_call_id=call["id"]))
    return {"calls": [c["name"] for c in ai.tool_calls], "answer": (await bound.ainvoke(messages)).content}


async def structured() -> object:
    order = await chat.with_structured_output(Order).ainvoke("Ada wants two AB-12, express.")
    assert isinstance(order, Order)
    return order.model_dump()


async def responses_invoke() -> object:
    ai = await responses.ainvoke("Say hello.")
    return ai.text


async def responses_stream() -> object:
    text = ""
    async for chunk in responses.astream("Say hello."):
        text += chunk.text
    return text


async def responses_tool() -> object:
    bound = responses.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    ai = await bound.ainvoke(messages)
    messages.append(ai)
    for call in ai.tool_calls:
        messages.append(ToolMessage(str(get_weather.invoke(call["args"])), tool_call_id=call["id"]))
    return {"calls": [c["name"] for c in ai.tool_calls], "answer": (await bound.ainvoke(messages)).text}


async def main() -> None:
    await run(
        {
            "responses_api": apis,
            "invoke": invoke,
            "stream": stream,
            "tool": tool_round,
            "structured": structured,
            "responses_invoke": responses_invoke,
            "responses_stream": responses_stream,
            "responses_tool": responses_tool,
        }
    )


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
