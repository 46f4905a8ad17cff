"""The output items of this proxy's own Responses, kept in memory for a while, so `item_reference` inputs resolve.

A client that leaves `store` on (the OpenAI default, and the Vercel AI SDK's) sends the assistant output of an
earlier step back as `{"type": "item_reference", "id": ...}` instead of the item itself. `ItemStore` keeps each
output item (message, function_call, reasoning) of every Response the proxy answered with `store` not false, under
the id the proxy gave it, in the form it takes as input: message and function_call items as they were answered (the
same dicts, nothing copied), a reasoning item as an empty marker (reasoning input is dropped anyway, so a reference
to one resolves to nothing). Only output items are kept, never the client's input.

Bounds: `max_bytes` (an estimate of the memory the kept strings take, plus a fixed cost per item) and `ttl`
seconds; the least recently stored item goes first when either is exceeded. `max_bytes` 0 turns the store off
(`enabled` false: nothing is kept and a reference is refused as before). Memory only, per process: with several
processes or replicas a reference resolves only where its response was answered. Never written to disk or logged.

Items belong to whoever asked for them: with inbound keys (PROXY_API_KEYS), each item is kept under an owner tag, a
keyed digest of the key its request presented (never the key itself; the digest's key is random per process), and a
reference resolves only for a request presenting the same key. Without inbound keys every caller is one owner.
Used from the event loop only (no locking).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# What one kept item costs beyond its strings: the dicts, the id key, the entry tuple (a rough, generous figure).
ITEM_OVERHEAD = 512
_REASONING: Mapping[str, Any] = {"type": "reasoning", "summary": []}  # resolves to nothing on input


def _entry(item: Mapping[str, Any]) -> tuple[Mapping[str, Any], int] | None:
    """An output item as (the input item it stands for, its estimated size), or None for what is not kept."""
    kind = item.get("type")
    size = ITEM_OVERHEAD
    if kind == "message":
        for part in item.get("content") or ():
            text = part.get("text")
            if isinstance(text, str):
                size += sys.getsizeof(text)
        return item, size
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            value = item.get(field)
            if isinstance(value, str):
                size += sys.getsizeof(value)
        return item, size
    if kind == "reasoning":
        return _REASONING, size
    return None


class ItemStore:
    """Output items by id, bounded by estimated bytes and by age; least recently stored evicted first."""

    __slots__ = ("_items", "_salt", "bytes", "clock", "max_bytes", "ttl")

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.bytes = 0
        self._salt = os.urandom(16)
        # (owner, id) -> (at, size, item)
        self._items: OrderedDict[tuple[bytes, str], tuple[float, int, Mapping[str, Any]]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._items)

    def usage(self) -> tuple[int, int]:
        """How many items are kept and their estimated bytes, the expired ones dropped first (for the gauges)."""
        self._evict(self.clock())
        return len(self._items), self.bytes

    def owner(self, key: bytes) -> bytes:
        """The owner tag of the inbound key a request presented (b"" when no keys are asked for)."""
        return hashlib.blake2b(key, key=self._salt, digest_size=16).digest()

    def keep(self, output: Iterable[Mapping[str, Any]], owner: bytes = b"") -> None:
        """Keep a Response's output items under their ids, for `owner` (an id kept again is replaced, and counts as
        newest)."""
        if not self.enabled:
            return
        now = self.clock()
        items = self._items
        for item in output:
            item_id = item.get("id")
            if not isinstance(item_id, str) or not item_id:
                continue
            entry = _entry(item)
            if entry is None:
                continue
            kept, size = entry
            if size > self.max_bytes:  # could never fit: keeping it would only empty the store
                continue
            old = items.pop((owner, item_id), None)
            if old is not None:
                self.bytes -= old[1]
            items[owner, item_id] = (now, size, kept)
            self.bytes += size
        self._evict(now)

    def get(self, item_id: str, owner: bytes = b"") -> Mapping[str, Any] | None:
        """The input item a kept output item of `owner` stands for; None when it is unknown, another owner's, or
        has expired."""
        entry = self._items.get((owner, item_id))
        if entry is None:
            return None
        now = self.clock()
        if now - entry[0] >= self.ttl:
            self._evict(now)
            return None
        return entry[2]

    def _evict(self, now: float) -> None:
        """Drop the oldest items while the store is over its size or they are older than the TTL."""
        items = self._items
        oldest = now - self.ttl
        while items:
            at, size, _ = next(iter(items.values()))
            if self.bytes <= self.max_bytes and at > oldest:
                return
            items.popitem(last=False)
            self.bytes -= size
