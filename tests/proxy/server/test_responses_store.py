"""The store of the proxy's own Responses output items: what it keeps and in what form, its bounds (estimated bytes,
age by an injected clock), the order it evicts in, and that size 0 turns it off. How references to kept items
resolve inside a request is in `test_responses.py` (the translation) and `test_responses_e2e.py` (the stack)."""

from __future__ import annotations

import sys
from typing import Any

from claude_proxy.convert.responses import call_item, message_item, reasoning_item
from claude_proxy.server.responses_store import ITEM_OVERHEAD, ItemStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def texts(n: int, size: int = 100) -> list[dict[str, Any]]:
    return [message_item(f"msg_x_{i}", chr(ord("a") + i) * size) for i in range(n)]


def cost(item: dict[str, Any]) -> int:
    return ITEM_OVERHEAD + sys.getsizeof(item["content"][0]["text"])


def test_output_items_are_kept_in_their_input_form() -> None:
    store = ItemStore(1 << 20, 60, clock=Clock())
    said = message_item("msg_a_0", "Let me look.")
    call = call_item("fc_a_1", "toolu_1", "lookup", '{"id": 4}')
    store.keep([reasoning_item("rs_a_2", "a long chain of thought " * 50), said, call, {"type": "web_search_call"}])
    assert store.get("msg_a_0") is said and store.get("fc_a_1") is call  # the answered dicts, not copies
    assert store.get("rs_a_2") == {"type": "reasoning", "summary": []}  # the thinking text is not kept
    assert store.get("nope") is None and len(store) == 3
    call_cost = ITEM_OVERHEAD + sum(sys.getsizeof(call[k]) for k in ("call_id", "name", "arguments"))
    assert store.bytes == cost(said) + call_cost + ITEM_OVERHEAD


def test_the_byte_bound_evicts_the_least_recently_stored_first() -> None:
    a, b, c, d = texts(4)
    store = ItemStore(3 * cost(a), 3600, clock=Clock())
    store.keep([a, b, c])
    assert len(store) == 3 and store.bytes == 3 * cost(a)
    store.keep([d])
    assert store.get(a["id"]) is None and [store.get(x["id"]) for x in (b, c, d)] == [b, c, d]
    store.keep([b])  # stored again: now the newest, so c goes next
    store.keep([a])
    assert store.get(c["id"]) is None and [store.get(x["id"]) for x in (d, b, a)] == [d, b, a]
    assert store.bytes == 3 * cost(a)


def test_reading_an_item_does_not_make_it_newer() -> None:
    a, b, c = texts(3)
    store = ItemStore(2 * cost(a), 3600, clock=Clock())
    store.keep([a, b])
    assert store.get(a["id"]) is a
    store.keep([c])
    assert store.get(a["id"]) is None and store.get(b["id"]) is b


def test_an_item_larger_than_the_store_is_not_kept_and_evicts_nothing() -> None:
    small, big = message_item("msg_s_0", "hi"), message_item("msg_b_0", "x" * 5000)
    store = ItemStore(cost(small) + 100, 3600, clock=Clock())
    store.keep([small, big])
    assert store.get("msg_s_0") is small and store.get("msg_b_0") is None and len(store) == 1


def test_items_expire_after_the_ttl() -> None:
    clock = Clock()
    store = ItemStore(1 << 20, 60, clock=clock)
    first, second = texts(2)
    store.keep([first])
    clock.now += 30
    store.keep([second])
    clock.now += 29.9
    assert store.get(first["id"]) is first
    clock.now += 0.1  # 60 s since the first was stored
    assert store.get(first["id"]) is None and store.get(second["id"]) is second
    assert len(store) == 1 and store.bytes == cost(second)
    clock.now += 30
    store.keep([])  # expired items go when anything is stored, not only when read
    assert len(store) == 0 and store.bytes == 0
    # ... and when the gauges are read: they never count an expired item.
    store.keep([first])
    clock.now += 60
    assert len(store) == 1 and store.usage() == (0, 0)


def test_size_zero_is_off_and_keeps_nothing() -> None:
    store = ItemStore(0, 3600, clock=Clock())
    assert not store.enabled
    store.keep(texts(2))
    assert len(store) == 0 and store.bytes == 0 and store.get("msg_x_0") is None
    assert ItemStore(1, 3600).enabled


def test_an_owner_resolves_only_its_own_items() -> None:
    store = ItemStore(1 << 20, 60, clock=Clock())
    alice, bob = store.owner(b"key-alice"), store.owner(b"key-bob")
    assert alice != bob and alice == store.owner(b"key-alice") and b"key-alice" not in alice
    said = message_item("msg_o_0", "for Alice")
    store.keep([said], alice)
    assert store.get("msg_o_0", alice) is said
    assert store.get("msg_o_0", bob) is None and store.get("msg_o_0") is None
    # Another process (another store) gives the same key another tag: nothing about the key is fixed in the tag.
    assert ItemStore(1 << 20, 60).owner(b"key-alice") != alice
