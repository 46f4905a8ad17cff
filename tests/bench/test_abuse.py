"""Smoke run of bench/abuse.py: real processes, the quick scenarios; checks the table and what the clients saw (the
statuses are the proxy's behaviour, not its speed), never a memory figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_abuse_prints_one_row_per_scenario_with_what_the_clients_saw() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "abuse.py"), "head", "deep", "bodies-nokey"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "Scenario" not in line]
    assert len(rows) == 3
    head, deep, nokey = (row.split(" | ")[-1].rstrip(" |") for row in rows)
    assert head.startswith("431")
    assert deep == "400"
    assert nokey == "8 x 401"
    for row in rows:
        assert row.split(" | ")[3].endswith("MB")  # the growth column
