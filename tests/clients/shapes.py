"""What every client script asks for: the order its structured output must parse into, and the weather tool's answer
(tests/proxy/test_python_clients.py plays the model that answers with them)."""

from __future__ import annotations

from pydantic import BaseModel


class Item(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    customer: str
    items: list[Item]
    express: bool


def weather(city: str) -> str:
    """What the weather tool answers for `city`."""
    return f"sunny, 21 C in {city}"
