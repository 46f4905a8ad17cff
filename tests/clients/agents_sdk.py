"""The OpenAI Agents SDK in its default mode (the Responses API; function tools strict) against the proxy at
PROXY_URL, configured as its users do it: OPENAI_BASE_URL and OPENAI_API_KEY."""

from __future__ import annotations

import asyncio
import os

from guard import MODEL, PROXY, run
from shapes import Order, weather

os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = PROXY, "unused"

from agents import Agent, Runner, function_tool  # noqa: E402


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


tools = Agent(name="weather", instructions="Answer briefly.", model=MODEL, tools=[get_weather])
orders = Agent(name="orders", instructions="Extract the order.", model=MODEL, output_type=Order)


async def tool() -> object:
    result = await Runner.run(tools, "What is the weather in Paris?")
    return result.final_output


async def tool_stream() -> object:
    result = Runner.run_streamed(tools, "What is the weather in Paris?")
    kinds = [event.type async for event in result.stream_events()]
    return {"output": result.final_output, "deltas": kinds.count("raw_response_event") > 3}


async def output() -> object:
    result = await Runner.run(orders, "Ada wants two AB-12, express.")
    return result.final_output.model_dump()


async def output_stream() -> object:
    result = Runner.run_streamed(orders, "Ada wants two AB-12, express.")
    async for _ in result.stream_events():
        pass
    return result.final_output.model_dump()


asyncio.run(run({"tool": tool, "tool_stream": tool_stream, "output": output, "output_stream": output_stream}))
