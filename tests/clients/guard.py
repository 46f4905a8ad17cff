"""Imported first by every client script here: sets the libraries' offline and telemetry switches, refuses every
connection that is not to the loopback (an audit hook, which no library can remove) and records the attempt, and
prints results as JSON lines (`emit`); at exit it prints the refused attempts as the case "network"."""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm: the cost map it ships, not the one online
    "OPENAI_AGENTS_DISABLE_TRACING": "1",  # the Agents SDK: no traces uploaded
    "OTEL_SDK_DISABLED": "true",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "LOGFIRE_SEND_TO_LOGFIRE": "false",
}
for key, value in OFFLINE.items():
    os.environ.setdefault(key, value)

PROXY = os.environ["PROXY_URL"] + "/v1"
MODEL = "claude-sonnet-4-6"
REFUSED: list[str] = []


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo" and not _loopback(args[0]):
        REFUSED.append(f"resolve {args[0]!r}")
        raise OSError(f"no network in these tests: {args[0]!r}")
    if event == "socket.connect" and isinstance(args[1], tuple) and not _loopback(args[1][0]):
        REFUSED.append(f"connect {args[1][0]!r}")
        raise OSError(f"no network in these tests: {args[1][0]!r}")


sys.addaudithook(_audit)


def emit(case: str, parsed: Any) -> None:
    print(json.dumps({"case": case, "parsed": parsed}, default=str), flush=True)


async def run(cases: dict[str, Callable[[], Awaitable[Any]]]) -> None:
    """Runs each case named on the command line (all by default), printing its result or its error."""
    for name in sys.argv[1:] or list(cases):
        try:
            emit(name, await cases[name]())
        except Exception as exc:
            print(json.dumps({"case": name, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            traceback.print_exc()


atexit.register(lambda: emit("network", REFUSED))
