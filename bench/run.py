"""`make bench`: the proxy against calling the upstream directly, measured in one run, printed as one table.

Starts the lean upstream (`bench/upstream.py`) and the proxy as users run it (`claude-proxy serve`, pointed at the
upstream with a dummy key), then measures each figure twice — straight to the upstream, and through the proxy:

- non-streaming requests at concurrency 1, 16 and 64 with `wrk` (a Lua script posts the body); without `wrk`, a
  Python async load generator takes its place, and the table says so;
- a 200-delta stream at concurrency 1: time to the first text token and total time; streams/s at concurrency 16;
- the proxy's resident memory (its whole process tree) after warm-up, after the request and stream loads (a leak
  shows there), after the paced streams below (the high water of 1,000 open streams), and while 1,000 streams are
  held open by the upstream, checking that every one of them then completes without an error;
- then c=16 again against a proxy with `--workers 2`, and against `bench/forwarder.py` (a bare forwarder under the
  same uvicorn: the ceiling any proxy served there can reach).

- a realistic streaming load: `--paced` streams (1,000) open together, started evenly over `--paced-ramp` seconds (1:
  a thousand new streams a second; 0 opens them at once, 100 at a time), each paced by the stand-in at `--paced-rate`
  text deltas a second (20) for `--paced-seconds` (10), direct and through the proxy. Each delta carries the
  CLOCK_MONOTONIC time the stand-in wrote it; the client takes each token's latency on arrival (one clock, one
  machine, so no skew). The added inter-token delay is the proxy's latency percentile minus the direct one: the direct
  run has the same pacing, event-loop and client costs, so the difference is what the proxy adds to every token, free
  of the pacing jitter a comparison of client-observed gaps would mix in. The "all open" p99 counts only the tokens
  that arrived while every stream was streaming (no stream starting or ending). CPU per relayed event is the proxy
  process tree's own CPU time (psutil) over the paced run divided by the deltas relayed; RSS per open stream is the
  tree's RSS sampled while every stream is open minus the RSS just before they opened, over the count. The load
  generator's own CPU (this process) is reported, so one can see it was not the bottleneck. Smaller counts
  (`--paced-steps`: 250, 500, 750) run afterwards, their streams started at the same rate, each with its added p99;
  the largest count held within the target says how many such streams one proxy process carries on the machine;
- CPU per non-streamed request at c=1 and c=16 from the proxy process tree's own CPU time over the load;
- afterwards, a proxy behind a local forward proxy (`bench/httpproxy.py`, through `HTTP_PROXY`/`HTTPS_PROXY`), at
  c=1 and c=16 with its CPU per request.

The issue's targets (ratios and added times) are the Target and Met columns: pass or fail.

The table goes to stdout and to `bench/results/<UTC time>.md` and `bench/results/latest.md`.
Run `python -m bench.run --help` for the knobs (durations, `--workers`, where to write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.client import Connection, Result, get, post
from bench.upstream import DELTAS

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
HELD_MODEL = "bench-hold"
PACED_MODEL = "bench-paced"
PACED_P99_MS = 5.0  # the added inter-token p99 target of the paced streams

_SYSTEM = "You are a concise assistant. Answer in plain prose. " * 6
_QUESTION = "Summarise the trade-offs between optimistic and pessimistic locking in a relational database. " * 5


def openai_body(stream: bool, model: str = "claude-sonnet-4-6") -> bytes:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _QUESTION}],
        "max_tokens": 1024,
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def anthropic_body(stream: bool, model: str = "claude-sonnet-4-6") -> bytes:
    """What the proxy sends upstream for `openai_body` (the same size and shape), for the direct measurements."""
    body: dict[str, object] = {
        "model": model,
        "max_tokens": 1024,
        "system": [{"type": "text", "text": _SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": _QUESTION, "cache_control": {"type": "ephemeral"}}],
            }
        ],
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


ANTHROPIC_HEADERS = "x-api-key: bench-dummy-key\r\nanthropic-version: 2023-06-01\r\n"


@dataclass
class Target:
    """Where a side is and what it is sent."""

    name: str
    port: int
    path: str
    body: Callable[[bool], bytes]
    headers: str = ""
    held_body: bytes = b""
    paced_body: bytes = b""

    def request(self, stream: bool) -> bytes:
        return post(HOST, self.port, self.path, self.body(stream), self.headers)


@dataclass
class Load:
    rps: float
    p50: float  # seconds
    p99: float
    requests: int
    errors: int


@dataclass
class Streams:
    ttft_p50: float
    ttft_p99: float
    total_p50: float
    total_p99: float
    count: int
    errors: int
    per_second: float = 0.0


@dataclass
class Row:
    figure: str
    direct: str
    proxy: str
    delta: str
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: str = "unknown"
    generator: str = "wrk"
    cpu: dict[int, float] = field(default_factory=dict)  # the main proxy's CPU us per request, by concurrency
    paced: Paced | None = None  # the paced streams sent directly to the upstream (compared with every server's)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# ---- processes -----------------------------------------------------------------------------------------------------


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this run: a port given to a server that has not bound it yet
    is free to the kernel too, and two servers must never be started on one port."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def proxy_command() -> list[str]:
    script = Path(sys.executable).parent / "claude-proxy"
    if script.exists():
        return [str(script)]
    found = shutil.which("claude-proxy")
    if found:
        return [found]
    return [sys.executable, "-m", "claude_proxy"]


@contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{path} server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(get(HOST, port, path).replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"server on port {port} not ready after {timeout:g} s:\n{log.read_text(errors='replace')[-2000:]}"
    )


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of `pid` and all its descendants (workers included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return total


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


# ---- load ----------------------------------------------------------------------------------------------------------

WRK_SCRIPT = """\
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"errors":%d,"status":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(wrk: str, target: Target, concurrency: int, seconds: float, workdir: Path) -> Load:
    body_file = workdir / f"{target.name}.json"
    body_file.write_bytes(target.body(False))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_HEADERS": target.headers.replace("\r\n", "\n")}
    threads = min(concurrency, 2)
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    out = subprocess.run(
        [*cmd, f"http://{HOST}:{target.port}{target.path}"], env=env, capture_output=True, text=True, timeout=120
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line[6:])
    duration = data["duration_us"] / 1e6
    return Load(
        rps=data["requests"] / duration if duration else 0.0,
        p50=data["p50"] / 1e6,
        p99=data["p99"] / 1e6,
        requests=data["requests"],
        errors=data["errors"] + data["status"],
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def run_python_load(target: Target, concurrency: int, seconds: float) -> Load:
    """The fallback load generator: `concurrency` keep-alive connections posting back to back for `seconds`."""
    raw = target.request(False)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = await Connection.open(HOST, target.port)
        try:
            while time.perf_counter() < deadline:
                result = await conn.request(raw)
                if result.status != 200:
                    errors += 1
                latencies.append(result.total)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Load(len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99), len(latencies), errors)


async def run_streams(target: Target, count: int) -> Streams:
    """`count` streams one after the other on one keep-alive connection."""
    raw = target.request(True)
    conn = await Connection.open(HOST, target.port)
    results: list[Result] = []
    try:
        for _ in range(count):
            results.append(await conn.request(raw))
    finally:
        conn.close()
    return _streams(results)


async def run_stream_load(target: Target, concurrency: int, seconds: float) -> Streams:
    raw = target.request(True)
    results: list[Result] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await Connection.open(HOST, target.port)
        try:
            while time.perf_counter() < deadline:
                results.append(await conn.request(raw))
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    summary = _streams(results)
    summary.per_second = sum(1 for r in results if r.ok) / elapsed
    return summary


def _streams(results: list[Result]) -> Streams:
    good = [r for r in results if r.ok and r.tokens == DELTAS]
    return Streams(
        ttft_p50=percentile([r.ttft for r in good], 50),
        ttft_p99=percentile([r.ttft for r in good], 99),
        total_p50=percentile([r.total for r in good], 50),
        total_p99=percentile([r.total for r in good], 99),
        count=len(results),
        errors=len(results) - len(good),
    )


async def hold_streams(proxy: Target, upstream_port: int, count: int, measure: Callable[[], int]) -> tuple[int, int]:
    """Open `count` streams through the proxy, wait until each has its first token, measure, release them all.

    Returns (RSS while held, streams that failed to open or to finish cleanly)."""
    raw = post(HOST, proxy.port, proxy.path, proxy.held_body, proxy.headers)
    conns: list[Connection] = []
    for batch in range(0, count, 100):  # open in batches: a burst of connects can overflow the listen backlog
        conns += await asyncio.gather(*(Connection.open(HOST, proxy.port) for _ in range(min(100, count - batch))))
    tasks = [asyncio.ensure_future(conn.request(raw)) for conn in conns]
    await asyncio.sleep(0)  # let every request start (and create its first-token future)
    failed = 0
    try:
        waits = [asyncio.ensure_future(_first_or_end(c.first_token, t)) for c, t in zip(conns, tasks, strict=True)]
        await asyncio.wait_for(asyncio.gather(*waits), 60)
        await asyncio.sleep(0.2)
        held_rss = measure()
        release = await Connection.open(HOST, upstream_port)
        await release.request(post(HOST, upstream_port, "/bench/release", b"{}"))
        release.close()
        for outcome in await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60):
            if not isinstance(outcome, Result) or not outcome.ok or outcome.tokens != DELTAS:
                failed += 1
    finally:
        for conn in conns:
            conn.close()
    return held_rss, failed


async def _first_or_end(first: asyncio.Future[None] | None, task: asyncio.Future[Result]) -> None:
    """Until the stream's first token, or its end (a request that failed before it began has no first token)."""
    waiting: list[asyncio.Future[object]] = [task] if first is None else [first, task]  # type: ignore[list-item]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)


@dataclass
class Paced:
    lag_p50: float
    lag_p99: float
    count: int
    errors: int
    events: int
    cpu: float  # the measured server's CPU seconds over the run (0 when none is measured)
    own_cpu: float  # this process's CPU seconds over the run
    elapsed: float
    rss_before: int = 0
    rss_open: int = 0
    peak: int = 0  # the most streams open at once (from a stream's request to its end)
    ttft_p99: float = 0.0  # time to a stream's first token, while the others stream
    all_open_p99: float = 0.0  # the lag p99 of the tokens that arrived while every stream was streaming


def peak_open(results: list[Result]) -> int:
    """The most of `results` that were open at the same moment."""
    edges = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def run_paced(
    target: Target, count: int, expected: int, pid: int | None, seconds: float, ramp: float = 0.0
) -> Paced:
    """`count` paced streams, started evenly over `ramp` seconds (0: at once, in batches of 100); each token's
    latency from the stand-in's stamp to its arrival here. RSS is sampled once every stream has its first token (all
    of them open), or after `seconds` / 2 at the latest."""
    raw = post(HOST, target.port, target.path, target.paced_body, target.headers)
    await asyncio.sleep(0.3)
    rss_before = tree_rss(pid) if pid else 0
    cpu0, own0, t0 = (tree_cpu(pid) if pid else 0.0), time.process_time(), time.perf_counter()
    conns: list[Connection] = []
    tasks: list[asyncio.Future[Result]] = []

    async def start(due: float) -> None:
        await asyncio.sleep(due - time.perf_counter())
        conn = await Connection.open(HOST, target.port, stamps=True)
        conns.append(conn)
        tasks.append(asyncio.ensure_future(conn.request(raw)))

    try:
        if ramp > 0:
            await asyncio.gather(*(start(t0 + ramp * i / count) for i in range(count)))
        else:
            for batch in range(0, count, 100):  # in batches: a burst of connects can overflow the listen backlog
                await asyncio.gather(*(start(0.0) for _ in range(min(100, count - batch))))
        await asyncio.sleep(0)  # every request started (and made its first-token future)
        firsts = [asyncio.ensure_future(_first_or_end(c.first_token, t)) for c, t in zip(conns, tasks, strict=True)]
        await asyncio.wait(firsts, timeout=max(0.2, ramp + seconds / 2 - (time.perf_counter() - t0)))
        rss_open = tree_rss(pid) if pid else 0
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), ramp + seconds + 120)
    finally:
        for conn in conns:
            conn.close()
    cpu, own, elapsed = (tree_cpu(pid) - cpu0) if pid else 0.0, time.process_time() - own0, time.perf_counter() - t0
    lags: list[float] = []
    errors = events = 0
    results = [outcome for outcome in outcomes if isinstance(outcome, Result)]
    for outcome in outcomes:
        if isinstance(outcome, Result):
            lags += outcome.lags or []
            events += outcome.tokens
        if not isinstance(outcome, Result) or not outcome.ok or outcome.tokens != expected:
            errors += 1
    return Paced(
        percentile(lags, 50), percentile(lags, 99), count, errors, events, cpu, own, elapsed, rss_before, rss_open,
        peak_open(results), percentile([r.ttft for r in results], 99), percentile(all_open_lags(results), 99),
    )  # fmt: skip


def _within(direct: Paced, proxy: Paced) -> bool:
    """The paced run through the proxy held the added inter-token p99 target, with no error on either side."""
    return (proxy.lag_p99 - direct.lag_p99) * 1000 <= PACED_P99_MS and not (direct.errors or proxy.errors)


def all_open_lags(results: list[Result]) -> list[float]:
    """The lags of the tokens that arrived while every stream was streaming: after the last stream's first token and
    before the first stream's end (none when there was no such moment)."""
    if not results or any(r.first is None for r in results):
        return []
    begin, end = max(r.first or 0.0 for r in results), min(r.end for r in results)
    return [lag for r in results for lag, at in zip(r.lags or [], r.arrived or [], strict=True) if begin < at < end]


# ---- the run -------------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def added(direct: float, proxy: float) -> str:
    return f"{(proxy - direct) * 1000:+.2f} ms"


def mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def check_added(limit_ms: float, direct: float, proxy: float) -> tuple[bool, str]:
    extra = (proxy - direct) * 1000
    return extra <= limit_ms, "" if extra <= limit_ms else f"over by {extra - limit_ms:.2f} ms"


def added_row(figure: str, direct: float, proxy: float, limit_ms: float | None) -> Row:
    """A row of seconds, direct and through the proxy, with the added milliseconds held to `limit_ms` when given."""
    row = Row(figure, ms(direct), ms(proxy), added(direct, proxy))
    if limit_ms is not None:
        row.met, row.note = check_added(limit_ms, direct, proxy)
        row.target = f"≤ +{limit_ms:g} ms"
    return row


def rps_row(figure: str, direct: Load, proxy: Load, min_ratio: float | None) -> Row:
    """A requests/s row, the proxy as a share of direct, held to `min_ratio` of direct when given."""
    ratio = proxy.rps / direct.rps if direct.rps else 0.0
    row = Row(figure, f"{direct.rps:,.0f}", f"{proxy.rps:,.0f}", f"{ratio:.1%} of direct")
    if min_ratio is not None:
        row.target, row.met = f"≥ {min_ratio:.0%} of direct", ratio >= min_ratio
        row.note = "" if row.met else f"short by {(min_ratio - ratio) * 100:.1f} points"
    return row


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


def cpu_row(figure: str, value: float, base: float | None, limit: float | None, base_name: str) -> Row:
    """CPU us per request; with `base`, as a multiple of it, held to `limit` times it when given."""
    row = Row(figure, "—", us(value), "")
    if base:
        ratio = value / base
        row.delta = f"{ratio:.2f}x {base_name}"
        if limit is not None:
            row.target, row.met = f"≤ {limit:g}x {base_name}", ratio <= limit
            row.note = "" if row.met else f"over by {ratio / limit:.1f}x"
    return row


async def cpu_load(
    load: Callable[[Target, int, float], Awaitable[Load]], target: Target, concurrency: int, seconds: float, pid: int
) -> tuple[Load, float]:
    """The load, and the server's own CPU seconds per request over it."""
    before = tree_cpu(pid)
    result = await load(target, concurrency, seconds)
    return result, (tree_cpu(pid) - before) / max(1, result.requests)


def load_generator(
    args: argparse.Namespace, workdir: Path
) -> tuple[Callable[[Target, int, float], Awaitable[Load]], str]:
    """(load, name): `load(target, concurrency, seconds)` drives non-streaming load with `wrk` when it is installed
    (and not refused by `--load-generator python`), else with the Python generator; `name` says which, for the
    table. `wrk`'s Lua scripts are written to `workdir`."""
    wrk = None if args.load_generator == "python" else shutil.which("wrk")
    if wrk is None and args.load_generator == "wrk":
        raise SystemExit("wrk is not installed (apt-get install wrk), and --load-generator wrk was asked for")

    async def load(target: Target, concurrency: int, seconds: float) -> Load:
        if wrk is not None:
            return await asyncio.to_thread(run_wrk, wrk, target, concurrency, seconds, workdir)
        return await run_python_load(target, concurrency, seconds)

    return load, "wrk" if wrk is not None else "Python (fallback)"


async def measure(
    args: argparse.Namespace, direct: Target, proxy: Target, pid: int, upstream_port: int, workdir: Path
) -> Report:
    report = Report(load_before=load_average())
    report.notes.append(
        f"The proxy ran with its defaults except PROXY_MAX_CONCURRENCY={max(args.hold, args.paced) + 64} (default 64) "
        f"and PROXY_MAX_CONNECTIONS={max(args.hold, args.paced) + 1000} (default 1000), so that "
        f"{max(args.hold, args.paced):,} streams can be open at once."
    )
    if (args.workers or 1) > 1:
        report.notes.append(
            f"RSS is the proxy's whole process tree: the supervisor and its {args.workers} workers "
            "(the memory targets are for one process)."
        )
    load, report.generator = load_generator(args, workdir)
    if report.generator != "wrk":
        report.notes.append(
            "Non-streaming load came from the Python load generator (`wrk` is not installed): its own cost is in "
            "both columns, so latencies read higher than with `wrk`."
        )

    def rss() -> int:
        return tree_rss(pid)

    # Warm-up: both paths, both kinds, so imports, pools and caches are in place before anything is measured.
    for target in (direct, proxy):
        if args.warmup > 0:
            await load(target, 16, args.warmup)
        else:
            await run_python_load(target, 4, 0.2)
        await run_streams(target, max(5, args.streams // 4))
    await asyncio.sleep(0.2)
    rss_warm = rss()

    for concurrency in (1, 16, 64):
        d = await load(direct, concurrency, args.duration)
        p, cpu = await cpu_load(load, proxy, concurrency, args.duration, pid)
        report.rows.append(rps_row(f"c={concurrency}: requests/s", d, p, None))
        if concurrency in (1, 16):
            report.cpu[concurrency] = cpu
            report.rows.append(cpu_row(f"c={concurrency}: proxy CPU per request", cpu, None, None, ""))
        report.rows.append(added_row(f"c={concurrency}: p50 latency", d.p50, p.p50, {1: 0.6}.get(concurrency)))
        report.rows.append(
            added_row(f"c={concurrency}: p99 latency", d.p99, p.p99, {1: 2.0, 16: 10.0}.get(concurrency))
        )
        if d.errors or p.errors:
            report.notes.append(f"c={concurrency}: {d.errors} errors direct, {p.errors} through the proxy.")

    sd = await run_streams(direct, args.streams)
    sp = await run_streams(proxy, args.streams)
    for label, dv, pv, limit in (
        ("stream c=1: first token p50", sd.ttft_p50, sp.ttft_p50, 1.0),
        ("stream c=1: first token p99", sd.ttft_p99, sp.ttft_p99, None),
        (f"stream c=1: {DELTAS}-delta total p50", sd.total_p50, sp.total_p50, 5.0),
        (f"stream c=1: {DELTAS}-delta total p99", sd.total_p99, sp.total_p99, None),
    ):
        report.rows.append(added_row(label, dv, pv, limit))
    ld = await run_stream_load(direct, 16, args.duration)
    lp = await run_stream_load(proxy, 16, args.duration)
    ratio = lp.per_second / ld.per_second if ld.per_second else 0.0
    report.rows.append(
        Row("stream c=16: streams/s", f"{ld.per_second:,.0f}", f"{lp.per_second:,.0f}", f"{ratio:.1%} of direct")
    )
    for name, s in (("direct", sd), ("proxy", sp), ("direct c=16", ld), ("proxy c=16", lp)):
        if s.errors:
            report.notes.append(f"streams ({name}): {s.errors} of {s.count} did not complete with {DELTAS} tokens.")

    await asyncio.sleep(0.2)
    rss_loads = rss()  # after the request and stream loads: growth here is a leak, not the paced streams' high water

    if args.paced > 0:
        expected = max(1, round(args.paced_rate * args.paced_seconds))
        within: list[int] = []
        pd = await run_paced(direct, args.paced, expected, None, args.paced_seconds, args.paced_ramp)
        pp = await run_paced(proxy, args.paced, expected, pid, args.paced_seconds, args.paced_ramp)
        report.paced = pd
        if _within(pd, pp):
            within.append(args.paced)
        n = f"{args.paced:,} paced streams"
        report.rows.append(added_row(f"{n}: added inter-token p50", pd.lag_p50, pp.lag_p50, None))
        report.rows.append(added_row(f"{n}: added inter-token p99", pd.lag_p99, pp.lag_p99, PACED_P99_MS))
        if math.isnan(pd.all_open_p99) or math.isnan(pp.all_open_p99):
            report.rows.append(Row(f"{n}: added inter-token p99, all open", "—", "—", "never all open at once"))
        else:
            report.rows.append(
                added_row(f"{n}: added inter-token p99, all open", pd.all_open_p99, pp.all_open_p99, None)
            )
        report.rows.append(added_row(f"{n}: first token p99", pd.ttft_p99, pp.ttft_p99, None))
        report.rows.append(Row(
            f"{n}: open at once (peak)", f"{pd.peak:,}", f"{pp.peak:,}", "", f"{args.paced:,}",
            pp.peak == args.paced and pd.peak == args.paced,
            "" if pp.peak == pd.peak == args.paced else "the first streams ended before the last ones began",
        ))  # fmt: skip
        per_event = pp.cpu / max(1, pp.events)
        report.rows.append(Row(f"{n}: proxy CPU per relayed event", "—", us(per_event), f"{pp.events:,} events"))
        per_stream = (pp.rss_open - pp.rss_before) / args.paced
        report.rows.append(Row(
            f"{n}: RSS per open stream", "—", f"{per_stream / 1e3:,.1f} KB", f"{mb(pp.rss_before)} idle",
            "≤ 100 KB", per_stream <= 100e3,
            "" if per_stream <= 100e3 else f"over by {(per_stream - 100e3) / 1e3:.1f} KB",
        ))  # fmt: skip
        report.rows.append(Row(
            f"{n}: errors", str(pd.errors), str(pp.errors), "", "0", pd.errors == 0 and pp.errors == 0,
            "" if not (pd.errors or pp.errors) else f"{pd.errors} direct, {pp.errors} through the proxy",
        ))  # fmt: skip
        report.rows.append(Row(
            f"{n}: load generator CPU", f"{pd.own_cpu / pd.elapsed:.0%} of a core",
            f"{pp.own_cpu / pp.elapsed:.0%} of a core", "", "",
        ))  # fmt: skip
        # Then smaller counts, at the same rate of new streams (the ramp scaled to the count): how far one proxy
        # process goes within the added-p99 target. After the full count, so that its RSS per stream is taken on a
        # process that had not yet grown (the steps may reuse the upstream connections it pooled).
        cores: list[str] = []
        for count in (step for step in args.paced_steps if step < args.paced):
            ramp = args.paced_ramp * count / args.paced
            sd_ = await run_paced(direct, count, expected, None, args.paced_seconds, ramp)
            sp_ = await run_paced(proxy, count, expected, pid, args.paced_seconds, ramp)
            report.rows.append(added_row(f"{count:,} paced streams: added inter-token p99", sd_.lag_p99, sp_.lag_p99,
                                         None))  # fmt: skip
            cores.append(f"{count:,}: {sp_.cpu / sp_.elapsed:.0%}")
            if _within(sd_, sp_):
                within.append(count)
        measured = [step for step in args.paced_steps if step < args.paced] + [args.paced]
        report.rows.append(Row(
            f"paced streams held within +{PACED_P99_MS:g} ms added p99, no error: the largest count", "—",
            f"{max(within):,}" if within else "none", "of " + ", ".join(f"{step:,}" for step in measured),
        ))  # fmt: skip
        if cores:
            cores.insert(0, f"{args.paced:,}: {pp.cpu / pp.elapsed:.0%}")
            report.notes.append(
                "The smaller paced counts ran after the full one (whose pooled upstream connections they may reuse), "
                "their streams started at the same rate; the proxy's CPU over each run, as a share of one core: "
                f"{', '.join(cores)}."
            )
        started = f"started evenly over {args.paced_ramp:g} s" if args.paced_ramp > 0 else "started at once"
        report.notes.append(
            f"Paced streams: {args.paced:,}, {started}, {args.paced_rate:g} deltas/s for {args.paced_seconds:g} s "
            'each; latency is per token, from the stand-in\'s stamp to its arrival at the client ("all open": only '
            "the tokens that arrived while every stream was streaming, between the last one's first token and the "
            f"first one's end); the proxy's CPU over that run was {pp.cpu / pp.elapsed:.0%} of a core."
        )

    await asyncio.sleep(0.2)
    rss_paced = rss()
    held_rss, held_failed = await hold_streams(proxy, upstream_port, args.hold, rss)
    await asyncio.sleep(0.5)
    rss_after_held = rss()

    growth = rss_loads / rss_warm - 1 if rss_warm else 0.0
    report.rows += [
        Row(
            "RSS after warm-up",
            "—",
            mb(rss_warm),
            "",
            "≤ 80 MB",
            rss_warm <= 80e6,
            "" if rss_warm <= 80e6 else f"over by {mb(rss_warm - int(80e6))}",
        ),
        Row(
            "RSS after the request and stream loads",
            "—",
            mb(rss_loads),
            f"{growth:+.1%}",
            "≤ +10%",
            growth <= 0.10,
            "" if growth <= 0.10 else f"over by {(growth - 0.10) * 100:.1f} points",
        ),
    ]
    if args.paced > 0:
        report.rows.append(Row(
            "RSS after the paced streams closed", "—", mb(rss_paced),
            f"{rss_paced / rss_warm - 1:+.1%}" if rss_warm else "",
        ))  # fmt: skip
    report.rows += [
        Row(
            f"RSS with {args.hold:,} streams open",
            "—",
            mb(held_rss),
            f"{held_failed} failed",
            f"{args.hold:,} held, no error",
            held_failed == 0,
            "" if not held_failed else f"{held_failed} failed",
        ),
        Row(f"RSS after the {args.hold:,} streams closed", "—", mb(rss_after_held), "", ""),
    ]
    return report


@dataclass
class Second:
    """A server measured at c=16 after the proxy of the main run stopped, next to the direct path again."""

    label: str  # names its rows: "c=16, <label>: ..."
    cmd: list[str]
    env: dict[str, str]
    port: int
    held_to_targets: bool  # the c=16 targets apply (a proxy), or the rows are for reference
    note: str
    cpu_limit: float | None = None  # CPU per request held to this multiple of the main proxy's
    paced: bool = False  # the paced streams too, next to the direct ones of the main run
    before: list[tuple[list[str], dict[str, str], int]] = field(default_factory=list)  # servers it needs first


async def measure_second(
    args: argparse.Namespace, direct: Target, second: Second, report: Report, workdir: Path, pid: int
) -> None:
    """c=16 against `second` (warmed up first, every worker of it), with the direct path measured in the same minute."""
    load, _ = load_generator(args, workdir)
    target = Target("second", second.port, "/v1/chat/completions", openai_body)
    await load(target, 16, max(args.warmup, 0.5))
    if second.cpu_limit is not None:
        for concurrency in (1, 16):
            _, cpu = await cpu_load(load, target, concurrency, args.duration, pid)
            report.rows.append(cpu_row(
                f"c={concurrency}, {second.label}: proxy CPU per request", cpu, report.cpu.get(concurrency),
                second.cpu_limit, "the direct path",
            ))  # fmt: skip
    d = await load(direct, 16, args.duration)
    p = await load(target, 16, args.duration)
    report.rows.append(rps_row(f"c=16, {second.label}: requests/s", d, p, None))
    if second.held_to_targets:
        report.rows.append(added_row(f"c=16, {second.label}: p99 latency", d.p99, p.p99, 10.0))
    if d.errors or p.errors:
        report.notes.append(f"c=16, {second.label}: {d.errors} errors direct, {p.errors} through it.")
    pd = report.paced
    if second.paced and pd is not None:
        expected = max(1, round(args.paced_rate * args.paced_seconds))
        paced_target = Target("second", second.port, "/v1/chat/completions", openai_body,
                              paced_body=openai_body(True, PACED_MODEL))  # fmt: skip
        pp = await run_paced(paced_target, args.paced, expected, pid, args.paced_seconds, args.paced_ramp)
        n = f"{args.paced:,} paced streams, {second.label}"
        limit = PACED_P99_MS if second.held_to_targets else None
        report.rows.append(added_row(f"{n}: added inter-token p99", pd.lag_p99, pp.lag_p99, limit))
        report.rows.append(added_row(f"{n}: first token p99", pd.ttft_p99, pp.ttft_p99, None))
        report.rows.append(Row(f"{n}: CPU per relayed event", "—", us(pp.cpu / max(1, pp.events)),
                               f"{pp.cpu / pp.elapsed:.0%} of a core"))  # fmt: skip
        report.rows.append(Row(
            f"{n}: errors", str(pd.errors), str(pp.errors), "", "0" if second.held_to_targets else "",
            (pp.errors == 0) if second.held_to_targets else None, f"{pp.errors} through it" if pp.errors else "",
        ))  # fmt: skip
    report.notes.append(second.note)


def render(report: Report, args: argparse.Namespace, elapsed: float) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    workers = args.workers or 1
    lines = [
        f"Run of {when}: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"proxy with {workers} worker{'s' if workers > 1 else ''}, load generator {report.generator}, "
        f"{args.duration:g} s per load figure, {args.streams} streams at c=1, {elapsed:.0f} s in all; "
        f"load average {report.load_before} before the run (other work on the machine shows in the p99s).",
        "",
        "| Figure | Direct to upstream | Through the proxy | Proxy vs direct | Target | Met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in report.rows:
        met = "" if row.met is None else ("pass" if row.met else f"**fail** ({row.note})")
        lines.append(f"| {row.figure} | {row.direct} | {row.proxy} | {row.delta} | {row.target} | {met} |")
    if report.notes:
        lines.append("")
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def second_servers(
    args: argparse.Namespace, proxy_env: dict[str, str], base_env: dict[str, str], upstream_port: int
) -> list[Second]:
    """After the main run: a proxy with `--scale-workers N`, and the bare forwarder (`bench/forwarder.py`)."""
    found = []
    if not args.no_transports:
        port = free_port()
        serve = [*proxy_command(), "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        fwd = free_port()
        behind = {k: v for k, v in proxy_env.items() if k.lower() != "no_proxy"}
        behind["HTTP_PROXY"] = behind["HTTPS_PROXY"] = f"http://{HOST}:{fwd}"
        found.append(Second(
            "behind an HTTP proxy", [*serve[:-4], "--port", str(port), "--workers", "1"], behind, port, False,
            "The `behind an HTTP proxy` rows are a proxy with HTTP_PROXY/HTTPS_PROXY set to `bench/httpproxy.py`, "
            "a local forward proxy; its own CPU is not counted. Ratios are to the main proxy's CPU per request.",
            cpu_limit=1.5,
            before=[([sys.executable, "-m", "bench.httpproxy", "--port", str(fwd)], {**base_env,
                     "PYTHONPATH": str(HERE.parent)}, fwd)],
        ))  # fmt: skip
    n = args.scale_workers
    if n > 1 and n != args.workers:
        port = free_port()
        found.append(Second(
            f"--workers {n}", [*proxy_command(), "serve", "--host", HOST, "--port", str(port), "--workers", str(n)],
            proxy_env, port, True,
            f"The `--workers {n}` rows come from a second proxy started after the first one stopped; on this machine "
            "its workers share the cores with the load generator and the upstream.",
            paced=args.paced > 0,
        ))  # fmt: skip
    if not args.no_ceiling:
        port = free_port()
        found.append(Second(
            "bare forwarder under uvicorn",
            [sys.executable, "-m", "uvicorn", "bench.forwarder:app", "--host", HOST, "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            {**base_env, "PYTHONPATH": str(HERE.parent), "BENCH_UPSTREAM_PORT": str(upstream_port)}, port, False,
            "The bare forwarder row is `bench/forwarder.py` (one process, uvicorn as `claude-proxy serve` runs it) in "
            "the proxy's column: it only rewrites the request and the answer and forwards them on a kept-alive "
            "connection, with no validation, keys, limits, retries, timeouts, error mapping, metrics or logging. It "
            "is the ceiling of any proxy served by uvicorn here, not a target. Its paced streams are relayed "
            "untranslated through aiohttp (the proxy's HTTP library): the floor of a relayed event's cost.",
            paced=args.paced > 0,
        ))  # fmt: skip
    return found


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"counts must be at least 1: {text!r}")
    return tuple(sorted(set(counts)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="benchmark: direct vs through the proxy")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per load figure (default 5; wrk rounds to whole seconds)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load per side (default 2)")
    parser.add_argument("--streams", type=int, default=300, help="streams timed one by one at c=1 (default 300)")
    parser.add_argument("--hold", type=int, default=1000, help="streams held open at once (default 1000)")
    parser.add_argument("--workers", type=int, default=0, help="claude-proxy serve --workers N (default: its own)")
    parser.add_argument(
        "--scale-workers",
        type=int,
        default=2,
        help="also measure c=16 with a second proxy started with --workers N (default 2; skipped when N < 2 or "
        "N equals --workers)",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the c=16 row of the bare forwarder (bench/forwarder.py)"
    )
    parser.add_argument("--paced", type=int, default=1000, help="paced streams open at once (default 1000; 0 skips)")
    parser.add_argument("--paced-rate", type=float, default=20.0, help="text deltas a second per paced stream")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="how long each paced stream lasts")
    parser.add_argument(
        "--paced-ramp",
        type=float,
        default=1.0,
        help="seconds over which the paced streams start, evenly (default 1; 0 starts them at once, 100 at a time)",
    )
    parser.add_argument(
        "--paced-steps",
        type=_counts,
        default=(250, 500, 750),
        help="smaller paced counts measured after the full one, comma-separated (default 250,500,750; '' skips them; "
        "counts not below --paced are left out)",
    )
    parser.add_argument("--no-transports", action="store_true", help="skip the behind-an-HTTP-proxy rows")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where tables are stored")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument(
        "--otel",
        action="store_true",
        help="the proxy exports OpenTelemetry traces and metrics over OTLP/HTTP to a local sink (bench/otlpsink.py)",
    )
    args = parser.parse_args(argv)

    raise_nofile()
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    upstream_port, proxy_port = free_port(), free_port()
    # No credentials of the machine's user, and no HTTP proxy between the proxy and the local stand-in.
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PROXY_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    base_env["NO_PROXY"] = base_env["no_proxy"] = "127.0.0.1,localhost"
    upstream_cmd = [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port),
                    "--paced-rate", str(args.paced_rate), "--paced-seconds", str(args.paced_seconds)]  # fmt: skip
    proxy_env = {
        **base_env,
        "ANTHROPIC_BASE_URL": f"http://{HOST}:{upstream_port}",
        "ANTHROPIC_API_KEY": "bench-dummy-key",
        "HOME": str(logs),  # no credentials file of the machine's user is ever read
        # The held streams all at once, not queued behind the default limit of concurrent upstream requests, nor
        # refused by the default limit of connections.
        "PROXY_MAX_CONCURRENCY": str(max(args.hold, args.paced) + 64),
        "PROXY_MAX_CONNECTIONS": str(max(args.hold, args.paced) + 1000),
    }
    serve = [*proxy_command(), "serve", "--host", HOST, "--port", str(proxy_port)]
    if args.workers:
        serve += ["--workers", str(args.workers)]
    sink: ExitStack = ExitStack()
    if args.otel:  # every span and metric exported, as to a collector beside the proxy
        sink_port = free_port()
        sink_cmd = [sys.executable, "-m", "bench.otlpsink", "--port", str(sink_port)]
        sink_proc = sink.enter_context(
            process(sink_cmd, {**base_env, "PYTHONPATH": str(HERE.parent)}, logs / "otlp.log")
        )
        wait_port(sink_port, sink_proc, logs / "otlp.log")
        proxy_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{HOST}:{sink_port}"
        proxy_env.setdefault("OTEL_SERVICE_NAME", "claude-code-proxy-bench")
    else:  # the default: whatever the environment says of OpenTelemetry, the proxy runs without it
        proxy_env = {k: v for k, v in proxy_env.items() if not k.startswith("OTEL_")}

    with (
        sink,
        process(upstream_cmd, {**base_env, "PYTHONPATH": str(HERE.parent)}, logs / "upstream.log") as up,
        process(serve, proxy_env, logs / "proxy.log") as px,
    ):
        wait_ready(upstream_port, "/v1/models", up, logs / "upstream.log")
        wait_ready(proxy_port, "/health", px, logs / "proxy.log")
        direct = Target(
            "direct", upstream_port, "/v1/messages", anthropic_body, ANTHROPIC_HEADERS,
            paced_body=anthropic_body(True, PACED_MODEL),
        )  # fmt: skip
        proxy = Target(
            "proxy", proxy_port, "/v1/chat/completions", openai_body, held_body=openai_body(True, HELD_MODEL),
            paced_body=openai_body(True, PACED_MODEL),
        )  # fmt: skip
        try:
            import uvloop

            runner: Callable[..., Report] = uvloop.run
        except ImportError:
            runner = asyncio.run
        report = runner(measure(args, direct, proxy, px.pid, upstream_port, logs))
        if args.otel:
            report.notes.append(
                "OpenTelemetry on: the proxy exported every span and its GenAI metrics over OTLP/HTTP to a local "
                "sink (bench/otlpsink.py) that decodes nothing; without --otel the proxy runs with no OTEL_ variable."
            )
        px.send_signal(signal.SIGTERM)  # the first proxy is done: it must not hold a core or memory meanwhile
        px.wait(30)
        for i, second in enumerate(second_servers(args, proxy_env, base_env, upstream_port)):
            log = logs / f"second-{i}.log"
            with ExitStack() as stack:
                for j, (cmd, env, port) in enumerate(second.before):
                    blog = logs / f"second-{i}-{j}.log"
                    wait_port(port, stack.enter_context(process(cmd, env, blog)), blog)
                sx = stack.enter_context(process(second.cmd, second.env, log))
                wait_ready(second.port, "/health", sx, log)
                runner(measure_second(args, direct, second, report, logs, sx.pid))
    table = render(report, args, time.monotonic() - started)
    print(table, end="")
    if not args.no_save:
        args.results.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        (args.results / f"{stamp}.md").write_text(table)
        (args.results / "latest.md").write_text(table)
        print(f"\nstored in {args.results / (stamp + '.md')} and {args.results / 'latest.md'}", file=sys.stderr)
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
