"""`claude-proxy serve` as a real subprocess, for the shutdown and soak tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


def proxy_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """This environment without the proxy's own settings (nothing of the machine's leaks in), HOME in `tmp_path` (no
    credentials file of the machine's user is read), then `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PROXY_"))}
    return {**clean, "HOME": str(tmp_path), **env}


@contextmanager
def serve_process(env: dict[str, str], tmp_path: Path, host: str | None = "127.0.0.1") -> Iterator[Served]:
    """Start the proxy on a free port (stderr into a file, so a full pipe never blocks it) and wait until it answers.
    `host=None`: no `--host`, the proxy's own default (or `HOST` in `env`)."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    full_env = proxy_env(tmp_path, {"LOG_LEVEL": "info", **env})
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "claude_proxy", "serve", *(["--host", host] if host else []), "--port", str(port)],
            env=full_env,
            stdout=sink,
            stderr=sink,
        )
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30  # a cold start on a loaded machine (the suite runs one worker per core)
        while True:
            try:
                if httpx.get(f"{served.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"claude-proxy serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
