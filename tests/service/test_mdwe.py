"""MemoryDenyWriteExecute=yes is safe: CPython with pyarrow, ssl, sqlite and inotify runs under it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.mdwe import SUPPORTED

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not SUPPORTED, reason="the seccomp emulation is written for x86_64 Linux")

WORKLOAD = """
import ctypes, io, sqlite3, ssl, sys, tempfile, pathlib
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from watchdog.observers import Observer
from watchdog.events import FileSystemEventHandler
import convsync.api.client, convsync.config, convsync.daemon, convsync.doctor

table = pa.table({"n": [1, 2, 3], "s": ["a", "b", "c"], "t": pa.array([1, 2, 3], pa.timestamp("ms"))})
buffer = io.BytesIO()
pq.write_table(table, buffer)
assert pq.read_table(io.BytesIO(buffer.getvalue())).equals(table)
assert pc.sum(table["n"]).as_py() == 6
ssl.create_default_context().load_default_certs()
with tempfile.TemporaryDirectory() as d:
    db = sqlite3.connect(pathlib.Path(d) / "s.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(x)")
    db.commit()
    db.close()
    observer = Observer()
    observer.schedule(FileSystemEventHandler(), d, recursive=True)
    observer.start()
    observer.stop()
    observer.join()
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
print("workload ok")
"""


def run_under_mdwe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.service.mdwe", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )


def test_write_execute_mapping_is_refused_under_the_filter() -> None:
    """The emulated filter is in force: a W+X mapping fails with EPERM (the control for the next test)."""
    probe = "import mmap\ntry:\n    mmap.mmap(-1, 4096, prot=7)\nexcept PermissionError:\n    print('refused')\n"

    done = run_under_mdwe(sys.executable, "-c", probe)

    assert done.stdout.strip() == "refused", done.stderr


def test_python_with_pyarrow_ssl_sqlite_and_inotify_works_under_the_filter() -> None:
    """convsync's libraries work (Parquet, TLS setup, SQLite WAL, inotify, ctypes) without W+X memory."""
    done = run_under_mdwe(sys.executable, "-c", WORKLOAD)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workload ok"


def test_workload_also_runs_under_the_kernels_mdwe_prctl() -> None:
    """Newer systemd uses prctl(PR_SET_MDWE) (Linux >= 6.3) instead of seccomp; the workload runs under it too."""
    prelude = (
        "import ctypes, sys\n"
        "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "    print('unsupported'); sys.exit(0)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", prelude + WORKLOAD], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )

    if done.stdout.strip() == "unsupported":
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workload ok"
