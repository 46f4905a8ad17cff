"""`claude-proxy serve --workers N` as a real process: N workers answer on one port, and bad values are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.proxy.serve_support import free_port, proxy_env

CLI = [str(Path(sys.executable).parent / "claude-proxy")]


def _env(tmp_path: Path) -> dict[str, str]:
    return proxy_env(
        tmp_path, {"ANTHROPIC_API_KEY": "sk-ant-api03-test-key", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    )


def _workers(pid: int) -> list[int]:
    """The worker processes `serve --workers` started under `pid` (its only children)."""
    return [child.pid for child in psutil.Process(pid).children()]


def _serve_two_workers(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """`serve --workers 2` on a free port; returns the process, the port and a deadline once both workers exist."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_workers(proc.pid)) < 2:
        time.sleep(0.1)
    return proc, port, deadline


@pytest.mark.slow
def test_two_workers_serve_one_port(tmp_path: Path) -> None:
    proc, port, deadline = _serve_two_workers(tmp_path)
    try:
        workers = _workers(proc.pid)
        assert len(workers) == 2
        health = None
        while time.monotonic() < deadline and health is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.1)
        assert health == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("workers", ["-1", "0"])
def test_workers_must_be_positive(tmp_path: Path, workers: str) -> None:
    out = subprocess.run([*CLI, "serve", "--workers", workers], env=_env(tmp_path), capture_output=True, text=True)
    assert out.returncode == 2
    assert "--workers must be at least 1" in out.stderr


@pytest.mark.slow
def test_a_worker_dying_stops_the_rest_and_fails(tmp_path: Path) -> None:
    proc, _, _ = _serve_two_workers(tmp_path)
    try:
        first, second = _workers(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert proc.wait(20) == 1  # not serving on silently with one worker fewer
        assert not Path(f"/proc/{second}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
