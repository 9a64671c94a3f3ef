"""The upload and frames benches at small sizes: their code paths run end to end and keep their limits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=170, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(180)
def test_upload_bench_runs_and_keeps_its_limits() -> None:
    """bench/upload.py uploads a small file via the inbox path and curl; hashes match, RSS is in bounds."""
    out = run_bench("upload.py", "--size-mib", "8")
    assert "upload throughput (8 MiB)" in out and "server sha256 == local sha256" in out


@pytest.mark.timeout(180)
def test_frames_bench_runs_and_keeps_its_limits() -> None:
    """bench/frames.py exports a small frame both ways and via curl; every row written, RSS in bounds."""
    out = run_bench("frames.py", "--rows", "5000")
    assert "JSON path peak RSS" in out and "parquet path" in out
