"""What clients that misbehave cost the proxy: its peak memory (RSS) and what the other clients see.

Each scenario starts a fresh `claude-proxy serve` (so its peak RSS, the kernel's VmHWM, is the scenario's own) in
front of a local stand-in for Anthropic (this file with `--upstream`: a JSON answer, or a stream of 64 KiB text
deltas written as fast as the proxy takes them, then held open), and misbehaves over raw sockets on 127.0.0.1:

- `head`: one request head of 32 MiB of `X-H: v` lines to `GET /health` (no key needed); `head4`: four at once;
- `conns`: 2,000 connections, each sending 16 KiB of a head (90 lines) and then nothing; `idle`: 2,000 that send
  nothing;
- `body`: one 31 MB chat request body; `bodies`: eight at once; `bodies-nokey`: eight with a wrong key, keys
  required;
- `drip`: a body dripped a byte every 2 s, with `PROXY_BODY_TIMEOUT=3`: when does the proxy answer?
- `readers`: eight streams whose clients never read (`PROXY_MAX_CONCURRENCY=8`, `PROXY_MAX_QUEUE=0`), while another
  client asks once a second: when is it served again, and are the upstream streams closed?
- `deep`: a chat request with a tool schema nested 300 deep: the status.

Run: `python bench/abuse.py [--proxy-path DIR] [SCENARIO ...]`. `--proxy-path` is the directory holding the
`claude_proxy` package to run (default: this tree's `proxy/`), so two versions are measured with one script. It
prints one Markdown row per scenario: the peak RSS over the RSS before it, and what the clients saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
DELTA = 65536  # text characters per streamed delta


# ---- the stand-in for Anthropic ------------------------------------------------------------------------------------


class Upstream(asyncio.Protocol):
    open_streams = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.streaming = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.answer(head.split(b" ")[1], body)

    def answer(self, path: bytes, body: bytes) -> None:
        if path == b"/stats":
            self.reply(json.dumps({"open_streams": Upstream.open_streams}).encode(), b"application/json")
        elif b'"stream":true' in body.replace(b" ", b""):
            self.streaming = True
            Upstream.open_streams += 1
            asyncio.get_running_loop().create_task(self.stream())
        else:
            message = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-6",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
            self.reply(json.dumps(message).encode(), b"application/json")

    def reply(self, body: bytes, kind: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (kind, len(body), body)
        )

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if not self.drained.done():
            self.drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming:
            Upstream.open_streams -= 1
            self.streaming = False
        drained = getattr(self, "drained", None)
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionError())

    async def stream(self) -> None:
        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
        }
        start |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
        delta = event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "y" * DELTA}},
        )
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            + event("message_start", {"type": "message_start", "message": start})
            + event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {}})
        )
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):  # 64 MiB, as fast as the proxy takes it; then the stream stays open
                if self.transport.is_closing():
                    return
                self.transport.write(delta)
                drained = getattr(self, "drained", None)
                if drained is not None and not drained.done():
                    await drained
                await asyncio.sleep(0)


async def serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port)
    print(f"ready {port}", flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


# ---- processes ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Proxy:
    port: int
    pid: int
    upstream: int

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 10.0, headers: str = "") -> int:
        """A well-behaved request: its status (read even when the proxy answered before the body was all sent), or 0
        when the connection failed or timed out."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{headers}"
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body)
                return status_of(sock)
        except OSError:
            return 0

    def upstream_streams(self) -> int:
        with socket.create_connection(("127.0.0.1", self.upstream), timeout=5) as sock:
            sock.sendall(b"GET /stats HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(4096)
        return int(json.loads(data.partition(b"\r\n\r\n")[2])["open_streams"])


def status_of(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            return 0
        data += piece
    return int(data.split(b" ")[1])


@contextlib.contextmanager
def proxy(proxy_path: Path, env: dict[str, str]) -> Iterator[Proxy]:
    up_port, port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PROXY_"))}
    base |= {"PYTHONPATH": str(proxy_path), "HOME": "/nonexistent", "LOG_LEVEL": "warning"}
    upstream = [sys.executable, str(Path(__file__).resolve()), "--upstream", str(up_port)]
    serve = [sys.executable, "-m", "claude_proxy", "serve", "--host", "127.0.0.1", "--port", str(port)]
    settings = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{up_port}", "ANTHROPIC_API_KEY": "sk-ant-api03-bench"}
    with running(upstream, base, up_port), running(serve, base | settings | env, port) as proc:
        target = Proxy(port, proc.pid, up_port)
        assert target.request("GET", "/health") == 200
        assert target.request("POST", "/v1/chat/completions", chat(10)) in (200, 401)  # warm: the first request
        yield target


def chat(size: int, stream: bool = False) -> bytes:
    ask = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x" * size}], "stream": stream}
    return json.dumps(ask).encode()


# ---- scenarios -------------------------------------------------------------------------------------------------------


def in_threads(count: int, work: Callable[[int], str]) -> list[str]:
    results = [""] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except OSError as exc:
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def huge_head(p: Proxy, size: int) -> str:
    with socket.create_connection(("127.0.0.1", p.port), timeout=60) as sock:
        lines = b"X-H: v\r\n" * 8192
        sent = 0
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            while sent < size:
                sock.sendall(lines)
                sent += len(lines)
            sock.sendall(b"\r\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                return f"{status_of(sock)} after {sent // MB} MiB sent"
            return f"{type(exc).__name__} after {sent // MB} MiB sent"
        return str(status_of(sock))


def summary(outcomes: list[str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} x {outcome}" if n > 1 else outcome for outcome, n in counts.items())


def scenario_head(p: Proxy, count: int) -> str:
    return summary(in_threads(count, lambda i: huge_head(p, 32 * MB)))


def scenario_conns(p: Proxy, send: bytes) -> str:
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(2000):
        try:
            sock = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            if send:
                sock.sendall(send)
            socks.append(sock)
        except OSError:
            refused += 1
    time.sleep(3)
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(65536) == b"":
                closed += 1
            else:
                closed += 1  # an answer (503) before the request: the server refused it
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    health = p.request("GET", "/health")
    for sock in socks:
        sock.close()
    return f"{len(socks) - closed} held open, {closed + refused} refused or closed; /health meanwhile: {health}"


def scenario_bodies(p: Proxy, headers: str = "", count: int = 8) -> str:
    body = chat(31_000_000)
    return summary(
        in_threads(count, lambda i: str(p.request("POST", "/v1/chat/completions", body, timeout=120, headers=headers)))
    )


def scenario_drip(p: Proxy) -> str:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", p.port), timeout=2) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n{")
        while time.monotonic() - started < 45:
            try:
                status = status_of(sock)
                return f"{status} after {time.monotonic() - started:.1f} s"
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
            except OSError as exc:
                return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
    return "no answer within 45 s (the body kept dripping)"


def scenario_readers(p: Proxy) -> str:
    readers = []
    body = chat(10, stream=True)
    for _ in range(8):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", p.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        readers.append(sock)
    time.sleep(1)
    started = time.monotonic()
    refused = 0
    served_at = None
    while time.monotonic() - started < 50:
        status = p.request("POST", "/v1/chat/completions", chat(10), timeout=10)
        if status == 200:
            served_at = time.monotonic() - started
            break
        refused += 1
        time.sleep(1)
    while (streams := p.upstream_streams()) and time.monotonic() - started < 60:
        time.sleep(0.5)
    closed_at = time.monotonic() - started
    for sock in readers:
        sock.close()
    waited = f"served after {served_at:.1f} s" if served_at is not None else "never served within 50 s"
    upstream = f"{streams} still open after {closed_at:.0f} s" if streams else f"all closed by {closed_at:.1f} s"
    return f"the other client: {refused} refusals (429), {waited}; upstream streams: {upstream}"


def scenario_deep(p: Proxy) -> str:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        schema = {"type": "array", "items": schema}
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": schema}}},
    }
    ask = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], "tools": [tool]}
    return str(p.request("POST", "/v1/chat/completions", json.dumps(ask).encode()))


# 16 KiB of a head, in 90 lines: within the default limits of size and lines, never finished.
PARTIAL_HEAD = b"GET /health HTTP/1.1\r\n" + (b"X-H: " + b"v" * 177 + b"\r\n") * 90

SCENARIOS: dict[str, tuple[str, dict[str, str], Callable[[Proxy], str]]] = {
    "head": ("one 32 MiB request head", {}, lambda p: scenario_head(p, 1)),
    "head4": ("four 32 MiB request heads at once", {}, lambda p: scenario_head(p, 4)),
    "conns": ("2,000 connections, 16 KiB of head each", {}, lambda p: scenario_conns(p, PARTIAL_HEAD)),
    "idle": ("2,000 idle connections", {}, lambda p: scenario_conns(p, b"")),
    "body": ("one 31 MB body", {}, lambda p: scenario_bodies(p, count=1)),
    "bodies": ("eight 31 MB bodies at once", {}, scenario_bodies),
    "bodies-nokey": (
        "eight 31 MB bodies at once, with a wrong key (PROXY_API_KEYS set)",
        {"PROXY_API_KEYS": "sk-bench-key-of-sixteen-chars"},
        lambda p: scenario_bodies(p, "authorization: Bearer wrong\r\n"),
    ),
    "drip": ("a body dripped a byte every 2 s (PROXY_BODY_TIMEOUT=3)", {"PROXY_BODY_TIMEOUT": "3"}, scenario_drip),
    "readers": (
        "eight streams never read (PROXY_MAX_CONCURRENCY=8)",
        {"PROXY_MAX_CONCURRENCY": "8", "PROXY_MAX_QUEUE": "0"},
        scenario_readers,
    ),
    "deep": ("a tool schema nested 300 deep", {}, scenario_deep),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--proxy-path", type=Path, default=ROOT / "proxy")
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(serve_upstream(args.upstream))
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    print(f"proxy: {args.proxy_path}")
    print("| Scenario | RSS before | Peak RSS | Growth | What the clients saw |")
    print("|---|---|---|---|---|")
    for name in args.scenarios:
        title, env, run = SCENARIOS[name]
        with proxy(args.proxy_path, env) as p:
            with contextlib.suppress(OSError):  # the peak so far (start-up's) forgotten: VmHWM is then the scenario's
                Path(f"/proc/{p.pid}/clear_refs").write_text("5")
            before = proc_status(p.pid, "VmRSS")
            seen = run(p)
            peak = proc_status(p.pid, "VmHWM")
        print(
            f"| {title} | {before / MB:.0f} MB | {peak / MB:.0f} MB | {(peak - before) / MB:+.0f} MB | {seen} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
