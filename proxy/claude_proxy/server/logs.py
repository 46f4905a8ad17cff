"""Log format: one line per record, JSON by default (`LOG_FORMAT=plain` for people reading a terminal).

The access log is the `claude_proxy.access` logger: one line per request, whose fields travel in `record.access` (a
dict) so both formats render them; under the proxy's own handler the line is formatted from the fields directly,
without a record (`direct_access_handler`, `format_access`). Nothing logged anywhere in the proxy carries a prompt, a
key or a token: messages name error types, statuses and ids only.

What a client wrote (the path, the model, …) reaches a line cut to `PROXY_LOG_FIELD_CHARS` (`clip`, by the access
edge) and escaped, so no client can forge a line or a field: JSON escapes control characters itself; the plain
format writes a client's value with its backslashes, blanks and control characters escaped
(a backslash doubled, a newline as backslash-n, a blank as backslash-x20, …).
Every message of a plain line has its control characters escaped likewise (a traceback follows on lines of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any, TextIO

import orjson

ACCESS_LOGGER = "claude_proxy.access"


_second: tuple[int, str] = (-1, "")

# What a plain line's value may not hold as it is: blanks (they separate fields), backslashes (they escape), control
# characters and the line separators beyond them.
_UNSAFE_VALUE = re.compile(r"[\x00-\x20\x7f-\xa0\\\u2028\u2029]")
_UNSAFE_MESSAGE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def plain_value(value: object) -> str:
    """A value as a plain line writes it: one token, nothing in it that reads as a separator or a new line."""
    text = str(value)
    return _UNSAFE_VALUE.sub(_escape, text) if _UNSAFE_VALUE.search(text) else text


def plain_message(text: str) -> str:
    """A message as a plain line writes it: on one line."""
    return _UNSAFE_MESSAGE.sub(_escape, text) if _UNSAFE_MESSAGE.search(text) else text


def clip(value: str | None, limit: int) -> str | None:
    """`value` cut to `limit` characters, saying how long it was."""
    if value is None or len(value) <= limit:
        return value
    return f"{value[:limit]}...[{len(value)}chars]"  # no blank: one token in a plain line


def _timestamp(created: float) -> str:
    global _second
    whole = int(created)
    if whole != _second[0]:  # the date part changes once a second; formatting it is most of the cost
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(created % 1 * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    def format_access(
        self, created: float, fields: dict[str, Any], level: str = "info", logger: str = ACCESS_LOGGER
    ) -> str:
        """The access line for `fields`: what `format` renders for a record carrying them, without the record."""
        line = {"ts": _timestamp(created), "level": level, "logger": logger, **fields}
        return orjson.dumps(line, default=str).decode()

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            return self.format_access(record.created, access, record.levelname.lower(), record.name)
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class PlainFormatter(logging.Formatter):
    def format_access(self, created: float, fields: dict[str, Any]) -> str:
        return f"{_timestamp(created)} INFO {ACCESS_LOGGER} {_plain_access(fields)}"

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record.created)} {record.levelname} {record.name}"
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            return f"{head} {_plain_access(access)}"
        text = f"{head} {plain_message(record.getMessage())}"
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


class LoopBatchingHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that, on a thread running an event loop, gathers the lines logged during one turn of the loop
    and writes them together at the end of it: under load one write per turn, not a write and a flush per request.

    Warnings and errors, and lines off the loop (start-up, other threads, after the loop stopped), are written at
    once, after any gathered before them, so lines never change order. `flush()` (which logging calls at exit)
    writes what is gathered."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.emit_line(line, at_once=record.levelno >= logging.WARNING)  # what may explain a crash never waits

    def emit_line(self, line: str, at_once: bool = False) -> None:
        """A line already formatted (see `direct_access_handler`), gathered to the end of the loop's turn; with
        `at_once`, written now (after what was gathered before it)."""
        loop: asyncio.AbstractEventLoop | None = None
        if not at_once:
            with contextlib.suppress(RuntimeError):  # no loop running on this thread
                loop = asyncio.get_running_loop()
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._pending.append(line)
            if loop is None:
                self._write()
            elif self._scheduled is not loop:
                self._scheduled = loop
                loop.call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = None
            self._write()

    def _write(self) -> None:
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # as StreamHandler: a broken stderr must not take the proxy down
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()
        super().flush()


def flush_batched() -> None:
    """Write what every LoopBatchingHandler has gathered: for the end of an event loop (a server stopping), whose
    last turn may not come."""
    loggers = [logging.root, *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, LoopBatchingHandler):
                handler.flush()


def _plain_access(a: dict[str, Any]) -> str:
    text = (
        f"{plain_value(a['method'])} {plain_value(a['path'])} {a['status']} {a['duration_ms']}ms"
        f" id={a['request_id']} model={plain_value(a['model'] or '-')}"
        f" upstream_id={plain_value(a['upstream_request_id'] or '-')}"
        f" tokens={a['input_tokens']}/{a['output_tokens']}"
    )
    if a.get("error"):
        text += f" error={plain_value(a['error'])}"
    return text


def direct_access_handler(logger: logging.Logger) -> LoopBatchingHandler | None:
    """The handler access lines can be handed to as text, skipping the LogRecord: only when the proxy's own logging
    set-up is in place unchanged (`logger` and its parent `claude_proxy` with no filters, the parent not propagating
    and writing only through a LoopBatchingHandler with one of the proxy's formatters, INFO enabled). Anything else
    (a test capturing records, an embedding application's own handlers) gets ordinary log records."""
    parent = logger.parent
    if logger.handlers or logger.filters or not logger.propagate or parent is None or parent.propagate:
        return None
    if parent.filters or len(parent.handlers) != 1 or logger.getEffectiveLevel() > logging.INFO:
        return None
    handler = parent.handlers[0]
    if type(handler) is not LoopBatchingHandler or handler.filters or handler.level > logging.INFO:
        return None
    if type(handler.formatter) not in (JSONFormatter, PlainFormatter) or logging.root.manager.disable >= logging.INFO:
        return None
    return handler


def logging_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A dictConfig for the proxy's loggers and uvicorn's, all through one formatter on stderr (batched per turn of
    the event loop).

    uvicorn's own access log stays off (the proxy writes its own); httpx/httpcore are held at WARNING so transport
    debugging can never print request headers.
    """
    name = level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO"
    formatter = f"{__name__}.JSONFormatter" if fmt == "json" else f"{__name__}.PlainFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": f"{__name__}.LoopBatchingHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "claude_proxy": {"handlers": ["stderr"], "level": name, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": name, "propagate": False},
            "uvicorn.error": {"level": name},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
