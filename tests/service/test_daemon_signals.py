"""The daemon as a process (fake engine): real signals and $NOTIFY_SOCKET, journald log lines, the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.conftest import NotifyListener
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    notify: NotifyListener
    config: Path
    state: Path
    engine_log: Path
    stderr: Path

    def engine_calls(self) -> list[str]:
        return self.engine_log.read_text().splitlines() if self.engine_log.exists() else []

    def log(self) -> str:
        return self.stderr.read_text()


@pytest.fixture
def daemon(tmp_path: Path, notify_socket: NotifyListener) -> Iterator[DaemonProcess]:
    """`run_daemon` with the fake engine in its own process, stderr announced as the journal stream."""
    config = tmp_path / "config.yaml"
    state = tmp_path / "state"
    config.write_text(f"server:\n  url: http://127.0.0.1:9/api/v2\nroot: {tmp_path / 'r'}\nstate_dir: {state}\n")
    stderr = tmp_path / "stderr"
    engine_log = tmp_path / "engine.log"
    with stderr.open("wb") as err:
        info = os.fstat(err.fileno())
        env = {
            **os.environ,
            "CONVSYNC_API_KEY": "s4w_signal-test-key",
            "NOTIFY_SOCKET": notify_socket.address,
            "WATCHDOG_USEC": "200000",
            "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
            "FAKE_ENGINE_LOG": str(engine_log),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.service.fake_engine", str(config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    running = DaemonProcess(proc, notify_socket, config, state, engine_log, stderr)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_ready_status_and_watchdog_pings(daemon: DaemonProcess) -> None:
    """The process announces READY=1, a STATUS= summary, and WATCHDOG=1 every WATCHDOG_USEC/2."""
    daemon.notify.wait_for("READY=1")
    daemon.notify.wait_for("WATCHDOG=1", times=3)

    assert "STATUS=2 conversations, 1 queued prompt, 0 queued uploads" in daemon.notify.lines()


def test_sigterm_stops_gracefully_with_exit_0(daemon: DaemonProcess) -> None:
    """SIGTERM: STOPPING=1, the engine is stopped (bounded), and the process exits 0."""
    daemon.notify.wait_for("READY=1")

    daemon.proc.send_signal(signal.SIGTERM)

    assert daemon.notify.wait_for_exit(daemon.proc) == 0
    assert "STOPPING=1" in daemon.notify.lines()
    assert daemon.engine_calls() == ["start", "stop 20"]


def test_sigint_stops_gracefully_with_exit_0(daemon: DaemonProcess) -> None:
    """SIGINT (Ctrl-C) stops the same way as SIGTERM."""
    daemon.notify.wait_for("READY=1")

    daemon.proc.send_signal(signal.SIGINT)

    assert daemon.notify.wait_for_exit(daemon.proc) == 0
    assert daemon.engine_calls()[-1] == "stop 20"


def test_sighup_reloads_the_config(daemon: DaemonProcess) -> None:
    """SIGHUP: RELOADING=1, the re-read config goes to the engine, READY=1 again; the daemon keeps running."""
    daemon.notify.wait_for("READY=1")
    daemon.config.write_text(daemon.config.read_text() + "log_level: debug\n")

    daemon.proc.send_signal(signal.SIGHUP)

    lines = daemon.notify.wait_for("READY=1", times=2)
    assert "RELOADING=1" in lines
    assert any(line.startswith("MONOTONIC_USEC=") for line in lines)
    wait_until(lambda: "reload log_level=debug" in daemon.engine_calls(), what="the engine to get the new config")
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.notify.wait_for_exit(daemon.proc) == 0


def test_log_lines_use_journald_priorities(daemon: DaemonProcess) -> None:
    """With stderr announced as $JOURNAL_STREAM every log line starts with a <N> priority, without a time."""
    daemon.notify.wait_for("READY=1")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.notify.wait_for_exit(daemon.proc)

    lines = daemon.log().splitlines()
    assert "<6>convsync.daemon: ready: the first full scan is done" in lines
    assert all(line.startswith("<") for line in lines), lines
    assert "s4w_signal-test-key" not in daemon.log()


def test_second_run_exits_73_naming_the_pid(daemon: DaemonProcess) -> None:
    """A second `convsync run` on the same state dir exits 73, naming the first one's pid and the dir."""
    daemon.notify.wait_for("READY=1")

    second = subprocess.run(
        [sys.executable, "-m", "convsync", "run", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVSYNC_API_KEY": "s4w_signal-test-key"},
        timeout=60,
        check=False,
    )

    assert second.returncode == 73, second.stderr
    assert f"pid {daemon.proc.pid}" in second.stderr
    assert str(daemon.state) in second.stderr
    assert daemon.proc.poll() is None
