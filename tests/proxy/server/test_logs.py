"""The log handler that gathers one event-loop turn's lines into one write, and the access line's direct path."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest

from claude_proxy.server.logs import (
    ACCESS_LOGGER,
    JSONFormatter,
    LoopBatchingHandler,
    PlainFormatter,
    direct_access_handler,
    flush_batched,
    logging_config,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler() -> tuple[LoopBatchingHandler, CountingStream]:
    stream = CountingStream()
    out = LoopBatchingHandler(stream)
    out.setFormatter(logging.Formatter("%(message)s"))
    return out, stream


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("claude_proxy", level, __file__, 1, message, None, None)


def test_lines_of_one_loop_turn_are_one_write_in_order() -> None:
    out, stream = handler()

    async def main() -> None:
        for i in range(5):
            out.emit(record(f"line {i}"))
        assert stream.getvalue() == ""  # gathered, not yet written
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        assert stream.writes == 1
        out.emit(record("next turn"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.getvalue().splitlines() == [*(f"line {i}" for i in range(5)), "next turn"]
    assert stream.writes == 2


def test_warnings_and_lines_off_the_loop_are_written_at_once_after_what_is_gathered() -> None:
    out, stream = handler()

    async def main() -> None:
        out.emit(record("gathered"))
        out.emit(record("a warning", logging.WARNING))
        assert stream.getvalue().splitlines() == ["gathered", "a warning"]

    asyncio.run(main())
    out.emit(record("no loop here"))
    assert stream.getvalue().splitlines() == ["gathered", "a warning", "no loop here"]


def test_flush_writes_what_a_stopped_loop_left_behind() -> None:
    out, stream = handler()
    logger = logging.getLogger("claude_proxy.test_logs_flush")
    logger.addHandler(out)
    try:
        loop = asyncio.new_event_loop()

        def last_turn() -> None:
            loop.stop()  # this is the loop's last turn: the one that would write never comes
            out.emit(record("the last words"))

        loop.call_soon(last_turn)
        loop.run_forever()
        assert stream.getvalue() == ""
        flush_batched()
        assert stream.getvalue() == "the last words\n"
        loop.close()
    finally:
        logger.removeHandler(out)


@pytest.fixture
def proxy_logging() -> Iterator[None]:
    """The proxy's own logging set-up (as `serve` installs it), undone afterwards."""
    names = ("claude_proxy", ACCESS_LOGGER, *logging_config()["loggers"])
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names
    }
    logging.config.dictConfig(logging_config("info", "json"))
    try:
        yield
    finally:
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)


@pytest.mark.usefixtures("proxy_logging")
def test_the_direct_access_path_is_taken_only_under_the_proxys_own_logging() -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    parent = logging.getLogger("claude_proxy")
    ours = [h for h in parent.handlers if isinstance(h, LoopBatchingHandler)]
    if len(parent.handlers) > 1:  # pytest's own capture handlers want records: no direct path then
        assert direct_access_handler(access) is None
    parent.handlers[:] = ours
    found = direct_access_handler(access)
    assert isinstance(found, LoopBatchingHandler)
    # anything that would see records instead of text turns it off
    extra = logging.NullHandler()
    access.addHandler(extra)
    assert direct_access_handler(access) is None
    access.removeHandler(extra)
    parent.propagate = True  # e.g. a test capturing records at the root
    assert direct_access_handler(access) is None
    parent.propagate = False
    parent.setLevel(logging.WARNING)
    assert direct_access_handler(access) is None
    parent.setLevel(logging.INFO)
    assert direct_access_handler(access) is found


FIELDS: dict[str, Any] = {
    "request_id": "req_1",
    "method": "POST",
    "path": "/v1/chat/completions",
    "route": "/v1/chat/completions",
    "status": 200,
    "duration_ms": 1.5,
    "model": "claude-sonnet-4-6",
    "stream": False,
    "upstream_request_id": "req_up",
    "input_tokens": 3,
    "output_tokens": 4,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "error": "x",
    "client": "127.0.0.1",
}


@pytest.mark.parametrize("formatter", [JSONFormatter(), PlainFormatter()], ids=["json", "plain"])
def test_the_direct_access_line_is_the_line_a_record_would_give(formatter: JSONFormatter | PlainFormatter) -> None:
    entry = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "request", None, None)
    entry.access = FIELDS
    entry.created = 1_795_000_000.25
    assert formatter.format_access(entry.created, FIELDS) == formatter.format(entry)
    assert "2026-11-18T" in formatter.format(entry) and ".250Z" in formatter.format(entry)


def test_a_plain_line_escapes_what_a_client_wrote_and_stays_one_line() -> None:
    forged = {**FIELDS, "path": "/x\n2030-01-01T00:00:00.000Z INFO claude_proxy.access GET /admin", "model": "a b\\c\r"}
    line = PlainFormatter().format_access(1_795_000_000.0, forged)
    assert "\n" not in line and "\r" not in line
    assert " /x\\n2030-01-01T00:00:00.000Z\\x20INFO\\x20claude_proxy.access\\x20GET\\x20/admin " in line
    assert " model=a\\x20b\\\\c\\r " in line
    message = logging.LogRecord("claude_proxy", logging.WARNING, __file__, 1, "GET %s -> 502", ("/a\nforged",), None)
    assert PlainFormatter().format(message).endswith("GET /a\\nforged -> 502")
