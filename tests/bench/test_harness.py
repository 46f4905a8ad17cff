"""Smoke run of the benchmark harness: tiny durations, real processes; checks the table, never the speed."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench.client import Result
from bench.run import _counts, all_open_lags

ROOT = Path(__file__).resolve().parents[2]

FIGURES = [
    "c=1: requests/s",
    "c=1: proxy CPU per request",
    "c=1: p50 latency",
    "c=1: p99 latency",
    "c=16: requests/s",
    "c=16: proxy CPU per request",
    "c=16: p50 latency",
    "c=16: p99 latency",
    "c=64: requests/s",
    "c=64: p50 latency",
    "c=64: p99 latency",
    "stream c=1: first token p50",
    "stream c=1: first token p99",
    "stream c=1: 200-delta total p50",
    "stream c=1: 200-delta total p99",
    "stream c=16: streams/s",
    "20 paced streams: added inter-token p50",
    "20 paced streams: added inter-token p99",
    "20 paced streams: added inter-token p99, all open",
    "20 paced streams: first token p99",
    "20 paced streams: open at once (peak)",
    "20 paced streams: proxy CPU per relayed event",
    "20 paced streams: RSS per open stream",
    "20 paced streams: errors",
    "20 paced streams: load generator CPU",
    "paced streams held within +5 ms added p99, no error: the largest count",
    "RSS after warm-up",
    "RSS after the request and stream loads",
    "RSS after the paced streams closed",
    "RSS with 40 streams open",
    "RSS after the 40 streams closed",
]
PACED_SECOND = ["added inter-token p99", "first token p99", "CPU per relayed event", "errors"]


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith(("| Figure", "|---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(("generator", "workers"), [("auto", "1"), ("python", "2")])
def test_harness_prints_and_stores_the_whole_table(generator: str, workers: str, tmp_path: Path) -> None:
    duration = "1" if generator == "auto" else "0.3"
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--duration", duration, "--warmup", "0", "--streams", "8",
         "--hold", "40", "--paced", "20", "--paced-seconds", "0.5", "--no-transports",
         "--paced-ramp", "0.1" if generator == "auto" else "0",
         "--paced-steps", "10,40" if generator == "auto" else "",
         "--load-generator", generator, "--workers", workers, "--results", str(tmp_path),
         *(["--no-ceiling"] if workers == "2" else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout
    rows = _rows(table)

    # With one worker, a second proxy with --workers 2 is measured at c=16 too (skipped when the first had 2).
    # Each second server relays the paced streams too.
    def paced(label: str) -> list[str]:
        return [f"20 paced streams, {label}: {figure}" for figure in PACED_SECOND]

    scaled = ["c=16, --workers 2: requests/s", "c=16, --workers 2: p99 latency", *paced("--workers 2")]
    # And the bare forwarder under uvicorn (relaying streams untranslated), unless --no-ceiling.
    ceiling = ["c=16, bare forwarder under uvicorn: requests/s", *paced("bare forwarder under uvicorn")]
    # A smaller paced step (10) runs after the 20, at the same rate of new streams; 40 is not below 20: left out.
    steps = ["10 paced streams: added inter-token p99"] if generator == "auto" else []
    paced_at = FIGURES.index("20 paced streams: load generator CPU") + 1
    assert list(rows) == FIGURES[:paced_at] + steps + FIGURES[paced_at:] + (scaled + ceiling if workers == "1" else [])
    if workers == "1":
        for label in ("--workers 2", "bare forwarder under uvicorn"):
            assert rows[f"20 paced streams, {label}: errors"][:2] == ["0", "0"]
    assert "errors direct" not in table  # no load figure, the forwarder's included, had failed requests
    assert rows["20 paced streams: errors"][:2] == ["0", "0"]
    assert rows["20 paced streams: open at once (peak)"][:2] == ["20", "20"]
    assert rows["20 paced streams: proxy CPU per relayed event"][2] == "200 events"
    largest = rows["paced streams held within +5 ms added p99, no error: the largest count"]
    assert largest[2] == ("of 10, 20" if generator == "auto" else "of 20")
    assert largest[1] in ({"none", "10", "20"} if generator == "auto" else {"none", "20"})
    assert ("proxy's CPU over each run, as a share of one core: 20: " in table) == (generator == "auto")
    number = re.compile(r"^[\d,]+(\.\d+)?( ms| MB| us| KB)?$")
    for figure, (direct, proxy, *_rest) in rows.items():
        if figure.endswith("load generator CPU") or figure.startswith("paced streams held"):
            continue
        assert number.match(proxy), (figure, proxy)
        assert (
            direct == "—"
            if figure.startswith("RSS") or "CPU per" in figure or "RSS" in figure
            else number.match(direct)
        ), (figure, direct)
    # Every relayed stream completed: the held ones are counted, the timed ones would be listed in the notes.
    assert rows["RSS with 40 streams open"][2] == "0 failed"
    assert rows["RSS with 40 streams open"][4] == "pass"
    assert "did not complete" not in table
    if generator == "python":
        assert "Python load generator" in table
    assert ("proxy with 2 workers" in table) == (workers == "2")
    stored = sorted(p.name for p in tmp_path.iterdir())
    assert len(stored) == 2 and "latest.md" in stored
    assert (tmp_path / "latest.md").read_text() == table
    assert all((tmp_path / name).read_text() == table for name in stored)


def _stream(start: float, first: float, end: float, arrivals: list[float]) -> Result:
    return Result(start=start, first=first, end=end, lags=[at / 100 for at in arrivals], arrived=arrivals)


def test_the_all_open_lags_are_those_of_tokens_between_the_last_first_token_and_the_first_end() -> None:
    # Stream a is first in and first out; b's first token comes at 2; a ends at 8: the window is (2, 8).
    a = _stream(0.0, 1.0, 8.0, [1.0, 3.0, 7.0, 8.0])
    b = _stream(1.5, 2.0, 9.0, [2.0, 5.0, 9.0])
    assert sorted(all_open_lags([a, b])) == [0.03, 0.05, 0.07]
    # Streams that never overlapped, or one without a first token, leave no such tokens.
    assert all_open_lags([_stream(0.0, 1.0, 2.0, [1.0, 1.5]), _stream(3.0, 4.0, 5.0, [4.0, 4.5])]) == []
    assert all_open_lags([a, Result(start=0.0, end=1.0, lags=[], arrived=[])]) == []


def test_paced_steps_are_parsed_sorted_and_unique_and_bad_ones_refused() -> None:
    assert _counts("750, 250,500,250") == (250, 500, 750)
    assert _counts("") == ()
    for bad in ("250,x", "0", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            _counts(bad)


@pytest.mark.slow
def test_the_otel_harness_exports_to_its_sink_only_when_asked() -> None:
    """`bench.otel_ab`, the timed workload of docs/performance.md#opentelemetry: with --otel the proxy's spans
    and metrics reach the local sink; without, the proxy runs with no exporter."""
    for otel in (True, False):
        out = subprocess.run(
            [sys.executable, "-m", "bench.otel_ab", "--requests", "20", "--streams", "2",
             *(["--otel"] if otel else [])],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        first = out.stdout.splitlines()[0]
        assert first.startswith(f"otel={'on' if otel else 'off'} requests=22 events=")
        sink = re.search(r"otlp sink: (\d+) exports, (\d+) bytes", out.stdout)
        assert (sink is not None) == otel
        if sink:
            assert int(sink[1]) >= 1 and int(sink[2]) > 0
