"""bench/transfer.py at a small size: the 1 GiB bench's code path end to end (RSS cap, hashes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_transfer_bench_small_run_passes(tmp_path: Path) -> None:
    """`bench/transfer.py --size-mib 8` exits 0: client RSS under 100 MiB and every copy's sha256 equal."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "transfer.py"), "--size-mib", "8", "--dir", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for figure in ("upload throughput", "download throughput", "client peak RSS", "sha256 of every copy"):
        assert figure in result.stdout, output[-4000:]
