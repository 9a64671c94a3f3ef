"""bench/run at its smallest size: every bench runs end to end and prints its figures (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Figures the benches of issue 7 print (bench/harness.py rows); targets are reported, never asserted here.
FIGURES = [
    "debounce",
    "prompt latency p50",
    "prompt latency p99",
    "busy: prompt latency p99",
    "stream latency p50",
    "stream latency p99",
    "deltas not found in file",
    "first full mirror",
    "idle CPU (% of one core)",
    "idle RSS",
    "idle request rate",
    "time to READY=1 (median)",
    "write requests",
    "newest transcripts",
    "every transcript",
    "429 answers",
    "with updated_at: slowest",
]
# Benches written by the client and files engineers, called by bench/run with their size flags.
OTHER_BENCHES = ["transfer", "upload", "frames"]


@pytest.mark.timeout(900)
def test_bench_run_smoke_prints_every_figure(tmp_path: Path) -> None:
    """`bench/run --smoke` exits 0 and prints every figure with its baseline column, and runs every bench."""
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "bench" / "run"), "--smoke"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=880,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output[output.index("== summary ==") :]
    missing = [f for f in FIGURES if f not in summary]
    assert not missing, f"figures not printed: {missing}\n{output[-6000:]}"
    for bench in OTHER_BENCHES:
        assert f"### {bench}: exit 0" in output, output[-6000:]
