"""llama-index's `OpenAILike` LLM (the OpenAI LLM for any OpenAI-compatible server) against the proxy at PROXY_URL,
as a chat and function-calling model: `chat`, `stream_chat`, `chat_with_tools` with the tool's result fed back,
`predict_and_call`, and `structured_predict` of a pydantic model (its default for function-calling models: a
tool)."""

from __future__ import annotations

from guard import MODEL, PROXY, run
from shapes import Order, weather

# isort: split
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike


def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


llm = OpenAILike(
    model=MODEL,
    api_base=PROXY,
    api_key="unused",
    is_chat_model=True,
    is_function_calling_model=True,
    context_window=200000,
)
weather_tool = FunctionTool.from_defaults(get_weather)
HELLO = [ChatMessage(role="user", content="Say hello.")]


async def chat() -> object:
    return llm.chat(HELLO).message.content


async def stream_chat() -> object:
    deltas = [chunk.delta or "" for chunk in llm.stream_chat(HELLO)]
    return "".join(deltas)


async def tool() -> object:
    response = llm.chat_with_tools([weather_tool], user_msg="What is the weather in Paris?")
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    messages = [ChatMessage(role="user", content="What is the weather in Paris?"), response.message]
    for call in calls:
        output = weather_tool.call(**call.tool_kwargs)
        messages.append(ChatMessage(role="tool", content=str(output), additional_kwargs={"tool_call_id": call.tool_id}))
    answer = llm.chat_with_tools([weather_tool], chat_history=messages)
    return {"calls": [c.tool_name for c in calls], "answer": answer.message.content}


async def predict_and_call() -> object:
    return str(llm.predict_and_call([weather_tool], "What is the weather in Paris?"))


async def structured() -> object:
    order = llm.structured_predict(Order, PromptTemplate("Extract the order: {text}"), text="Ada wants two AB-12.")
    return order.model_dump()


if __name__ == "__main__":
    import asyncio

    asyncio.run(
        run(
            {
                "chat": chat,
                "stream_chat": stream_chat,
                "tool": tool,
                "predict_and_call": predict_and_call,
                "structured": structured,
            }
        )
    )
