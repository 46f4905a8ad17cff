"""Log format: one line per record, JSON by default (`LOG_FORMAT=plain` for people reading a terminal).

The access log is the `claude_proxy.access` logger: one record per request, whose fields travel in
`record.access` (a dict) so both formats render them. Nothing logged anywhere in the proxy carries a prompt, a key or
a token: messages name error types, statuses and ids only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

ACCESS_LOGGER = "claude_proxy.access"


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname.lower()}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line["logger"] = record.name
            line.update(access)
        else:
            line["logger"] = record.name
            line["message"] = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                line["exception"] = record.exc_info[0].__name__
                line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record.created)} {record.levelname} {record.name}"
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            a = access
            text = (
                f"{a['method']} {a['path']} {a['status']} {a['duration_ms']}ms id={a['request_id']}"
                f" model={a['model'] or '-'} upstream_id={a['upstream_request_id'] or '-'}"
                f" tokens={a['input_tokens']}/{a['output_tokens']}"
            )
            if a.get("error"):
                text += f" error={a['error']}"
            return f"{head} {text}"
        text = f"{head} {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


def logging_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A dictConfig for the proxy's loggers and uvicorn's, all through one formatter on stderr.

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
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
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
