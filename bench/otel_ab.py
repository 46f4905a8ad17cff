"""`python -m bench.otel_ab [--otel]`: a fixed amount of work through the proxy, for timing the whole process with
and without OpenTelemetry, runs of each alternating (see docs/performance.md#opentelemetry).

It starts the stand-in (`bench/upstream.py`), the proxy (`claude-proxy serve`, one worker) and, with `--otel`, an
OTLP/HTTP sink (`bench/otlpsink.py`) the proxy exports every span and metric to; sends `--requests` non-streamed
chat completions and `--streams` 200-delta streams, `--concurrency` at a time; prints the proxy's own CPU per
request and per relayed event (its process tree, psutil), and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from bench.run import HERE, HOST, free_port, openai_body, process, proxy_command, tree_cpu, wait_port, wait_ready

DELTAS = 200  # text deltas in each stand-in stream


async def load(port: int, requests: int, streams: int, concurrency: int) -> tuple[int, int]:
    url = f"http://{HOST}:{port}/v1/chat/completions"
    plain, streamed = openai_body(False), openai_body(True)
    headers = {"content-type": "application/json"}
    done = {"requests": 0, "events": 0}
    work = [False] * requests + [True] * streams

    async def worker(session: aiohttp.ClientSession) -> None:
        while work:
            stream = work.pop()
            async with session.post(url, data=streamed if stream else plain, headers=headers) as response:
                assert response.status == 200, response.status
                if stream:
                    async for line in response.content:
                        done["events"] += line.startswith(b"data: ")
                else:
                    await response.read()
                done["requests"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done["requests"], done["events"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.otel_ab", description=__doc__)
    parser.add_argument("--otel", action="store_true", help="export traces and metrics to a local OTLP sink")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-otel-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PROXY_", "OTEL_"))}
    base["NO_PROXY"] = base["no_proxy"] = f"{HOST},localhost"
    upstream_port, proxy_port = free_port(), free_port()
    env = {
        **base,
        "ANTHROPIC_BASE_URL": f"http://{HOST}:{upstream_port}",
        "ANTHROPIC_API_KEY": "bench-dummy-key",
        "HOME": str(logs),
        "LOG_LEVEL": "warning",
    }
    here = {**base, "PYTHONPATH": str(HERE.parent)}
    with ExitStack() as stack:
        if args.otel:
            sink_port = free_port()
            sink = stack.enter_context(
                process([sys.executable, "-m", "bench.otlpsink", "--port", str(sink_port)], here, logs / "otlp.log")
            )
            wait_port(sink_port, sink, logs / "otlp.log")
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{HOST}:{sink_port}"
        up = stack.enter_context(
            process([sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)], here, logs / "up.log")
        )
        serve = [*proxy_command(), "serve", "--host", HOST, "--port", str(proxy_port), "--workers", "1"]
        px = stack.enter_context(process(serve, env, logs / "proxy.log"))
        wait_ready(upstream_port, "/v1/models", up, logs / "up.log")
        wait_ready(proxy_port, "/health", px, logs / "proxy.log")
        before = tree_cpu(px.pid)
        requests, events = asyncio.run(load(proxy_port, args.requests, args.streams, args.concurrency))
        cpu = tree_cpu(px.pid) - before
    plain = args.requests
    print(
        f"otel={'on' if args.otel else 'off'} requests={requests} events={events} proxy_cpu={cpu:.3f}s "
        f"per_request={cpu / requests * 1e6:.0f}us per_event_all={cpu / max(events + plain, 1) * 1e6:.1f}us"
    )
    if args.otel:
        print((logs / "otlp.log").read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
