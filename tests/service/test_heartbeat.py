"""The daemon's heartbeat file read back: what `convsync status` and `doctor` say about the daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from convsync.heartbeat import HEARTBEAT_FILE, Heartbeat, daemon_state


def test_a_fresh_heartbeat_of_a_live_process_reads_as_running(tmp_path: Path) -> None:
    """Pid alive, beat fresh: running, with uptime and the server's last answer."""
    beat = Heartbeat(tmp_path)
    beat.start()
    beat.update(last_contact=time.time() - 3, last_error=None)

    state = daemon_state(tmp_path)

    assert state.running
    assert state.text.startswith("running (pid ") and "server reached 3 s ago" in state.text


def test_a_daemon_that_died_without_stopping_reads_as_not_running(tmp_path: Path) -> None:
    """A heartbeat whose process is gone (a crash, SIGKILL) says NOT running and how to start it."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    now = time.time()
    (tmp_path / HEARTBEAT_FILE).write_text(json.dumps({"pid": int(dead.stdout), "started": now, "beat": now}))

    state = daemon_state(tmp_path)

    assert not state.running
    assert state.text.startswith(f"NOT running (pid {dead.stdout.strip()} ended without stopping cleanly) — start")


def test_a_live_daemon_that_stopped_beating_reads_as_not_responding(tmp_path: Path) -> None:
    """Pid alive but no beat for a minute: NOT responding, with where to look."""
    Heartbeat(tmp_path).start()

    state = daemon_state(tmp_path, now=time.time() + 60)

    assert not state.running
    assert state.text.startswith("NOT responding (pid ") and "journalctl --user -u convsync" in state.text


def test_no_heartbeat_reads_as_never_ran(tmp_path: Path) -> None:
    """A state directory no daemon used: NOT running."""
    assert daemon_state(tmp_path).text.startswith("not started (no daemon has run with this state directory)")
