"""pydantic-ai in its default mode against the proxy at PROXY_URL: `Agent("openai:<model>")` configured as its users
do it (OPENAI_BASE_URL and OPENAI_API_KEY), a function tool run and its result fed back, `output_type` a pydantic
model; `run` and `run_stream`. The case "model" names the model class the "openai:" prefix chose."""

from __future__ import annotations

import asyncio
import os

from guard import MODEL, PROXY, run
from shapes import Order, weather

os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = PROXY, "unused"

from pydantic_ai import Agent  # noqa: E402

tools = Agent(f"openai:{MODEL}", instructions="Answer briefly.")
orders = Agent(f"openai:{MODEL}", instructions="Extract the order.", output_type=Order)


@tools.tool_plain
def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


async def model() -> object:
    return type(tools.model).__name__


async def tool() -> object:
    result = await tools.run("What is the weather in Paris?")
    return result.output


async def tool_stream() -> object:
    async with tools.run_stream("What is the weather in Paris?") as result:
        deltas = [delta async for delta in result.stream_text(delta=True)]
    return "".join(deltas)


async def output() -> object:
    result = await orders.run("Ada wants two AB-12, express.")
    return result.output.model_dump()


async def output_stream() -> object:
    async with orders.run_stream("Ada wants two AB-12, express.") as result:
        order = await result.get_output()
    return order.model_dump()


asyncio.run(
    run({"model": model, "tool": tool, "tool_stream": tool_stream, "output": output, "output_stream": output_stream})
)
