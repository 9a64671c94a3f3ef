"""`convsync run` end to end against the emulator: sd_notify life cycle, a SIGHUP reload that keeps queued work,
and `convsync sync` under systemd's MemoryDenyWriteExecute filter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from convsync.api.client import AgentClient
from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from tests.service.conftest import NotifyListener
from tests.service.mdwe import SUPPORTED as MDWE_SUPPORTED
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
KEY = "s4w_test-key"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def taken(prompt: Path) -> bool:
    """The prompt file was emptied (or is between an editor's rename steps)."""
    try:
        return prompt.read_text() == ""
    except FileNotFoundError:
        return False


@dataclass
class Setup:
    emu: EmulatorServer
    config: Path
    root: Path
    state: Path
    log: Path

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(
            f"server:\n  url: {self.emu.base_url}\n  api_key_env: CONVSYNC_API_KEY\n"
            f"root: {self.root}\nstate_dir: {self.state}\n"
            "poll: {active_seconds: 0.3, idle_seconds: 1, conversations_seconds: 1, rescan_seconds: 2}\n"
            "debounce_ms: 50\n" + extra
        )

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "CONVSYNC_API_KEY": KEY, **extra}

    def exit_code(self, proc: subprocess.Popen[bytes], notify: NotifyListener) -> int:
        """Wait for the daemon to exit; if it hangs, make it dump its threads (faulthandler) and fail with that."""
        code = notify.wait_for_exit(proc, timeout=30)
        if code is None:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=10)
            raise AssertionError(f"the daemon did not exit; its log:\n{self.log.read_text()[-20000:]}")
        return code

    def folder_of(self, cid: str) -> Path | None:
        for marker in self.root.glob("*/*/.conversation"):
            if marker.parent.name.startswith("."):
                continue  # a folder still being built under a temp name, or moved aside
            if marker.read_text().strip() == cid:
                return marker.parent
        return None


@pytest.fixture
def setup(emu: EmulatorServer, tmp_path: Path) -> Setup:
    root = tmp_path / "root"
    root.mkdir()
    (root / ".convsync-root").write_text("")
    result = Setup(emu, tmp_path / "config.yaml", root, tmp_path / "state", tmp_path / "daemon.log")
    result.write_config()
    return result


def launch(setup: Setup, notify: NotifyListener) -> subprocess.Popen[bytes]:
    """`convsync run --config …` with its own NOTIFY_SOCKET and a 0.4 s watchdog; its output goes to setup.log."""
    with setup.log.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "convsync", "run", "--config", str(setup.config)],
            env=setup.env(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="400000", PYTHONFAULTHANDLER="1"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def daemon(setup: Setup, notify_socket: NotifyListener) -> Iterator[subprocess.Popen[bytes]]:
    proc = launch(setup, notify_socket)
    try:
        yield proc
    finally:
        reap(proc)


def test_run_announces_ready_status_watchdog_and_stopping(
    daemon: subprocess.Popen[bytes], notify_socket: NotifyListener, setup: Setup
) -> None:
    """READY=1 after the first scan, STATUS= with the summary, WATCHDOG=1 pings, STOPPING=1 and exit 0 on SIGTERM."""
    notify_socket.wait_for("READY=1")
    notify_socket.wait_for("WATCHDOG=1", times=3)
    assert any(line.startswith("STATUS=") and "conversation" in line for line in notify_socket.lines())

    daemon.send_signal(signal.SIGTERM)

    assert setup.exit_code(daemon, notify_socket) == 0, setup.log.read_text()
    assert "STOPPING=1" in notify_socket.lines()
    assert KEY not in setup.log.read_text()


def test_reload_keeps_a_prompt_queued_while_the_server_fails(
    daemon: subprocess.Popen[bytes], notify_socket: NotifyListener, setup: Setup
) -> None:
    """A prompt queued while sends fail survives a SIGHUP reload of a changed config and is delivered once."""
    notify_socket.wait_for("READY=1")
    emu = setup.emu
    cid = emu.create_conversation(emu.agent_id("Demo Agent"), "Reload test")
    folder = wait_until(lambda: setup.folder_of(cid), timeout=30, what="the conversation's folder")
    emu.add_fault(FaultRule(method="POST", route="stream_message", status=503))
    emu.add_fault(FaultRule(method="POST", route="post_message", status=503))

    (folder / "prompt.txt").write_text("hello across a reload\n")
    wait_until(lambda: taken(folder / "prompt.txt"), timeout=30, what="the prompt to be taken")
    notify_socket.wait_for("STATUS=", times=1)
    wait_until(
        lambda: any("1 prompt" in line for line in notify_socket.lines() if line.startswith("STATUS=")),
        timeout=30,
        what="STATUS= to show the queued prompt",
    )
    setup.write_config("log_level: debug\n")
    daemon.send_signal(signal.SIGHUP)
    lines = notify_socket.wait_for("READY=1", times=2)
    assert "RELOADING=1" in lines
    assert emu.user_messages(cid) == []

    emu.clear_faults()

    wait_until(lambda: emu.user_messages(cid), timeout=60, what="the queued prompt to reach the server")
    assert emu.user_messages(cid) == ["hello across a reload"]
    daemon.send_signal(signal.SIGTERM)
    assert setup.exit_code(daemon, notify_socket) == 0, setup.log.read_text()
    assert emu.user_messages(cid) == ["hello across a reload"]


def test_prompt_queued_at_sigterm_is_delivered_after_restart(setup: Setup, notify_socket: NotifyListener) -> None:
    """SIGTERM while a prompt waits for a failing server: exit 0, and the next daemon delivers it exactly once."""
    emu = setup.emu
    first = launch(setup, notify_socket)
    try:
        notify_socket.wait_for("READY=1")
        cid = emu.create_conversation(emu.agent_id("Demo Agent"), "Across a restart")
        folder = wait_until(lambda: setup.folder_of(cid), timeout=30, what="the conversation's folder")
        emu.add_fault(FaultRule(method="POST", route="stream_message", status=503))
        emu.add_fault(FaultRule(method="POST", route="post_message", status=503))
        (folder / "prompt.txt").write_text("still here after a restart\n")
        wait_until(lambda: taken(folder / "prompt.txt"), timeout=30, what="the prompt to be taken")

        first.send_signal(signal.SIGTERM)

        assert setup.exit_code(first, notify_socket) == 0, setup.log.read_text()
    finally:
        reap(first)
    assert emu.user_messages(cid) == []
    emu.clear_faults()
    second_notify = NotifyListener()
    second = launch(setup, second_notify)
    try:
        second_notify.wait_for("READY=1")
        wait_until(lambda: emu.user_messages(cid), timeout=60, what="the queued prompt to reach the server")
        second.send_signal(signal.SIGTERM)
        assert setup.exit_code(second, second_notify) == 0, setup.log.read_text()
    finally:
        reap(second)
        second_notify.close()
    assert emu.user_messages(cid) == ["still here after a restart"]


@pytest.mark.skipif(not MDWE_SUPPORTED, reason="the seccomp emulation is written for x86_64 Linux")
def test_sync_works_under_memory_deny_write_execute(setup: Setup) -> None:
    """`convsync sync` mirrors a conversation with a data frame while W+X memory is forbidden, as in the unit."""
    emu = setup.emu
    aid = emu.agent_id("Demo Agent")
    cid = emu.create_conversation(aid, "Frames")
    with AgentClient(emu.base_url, KEY) as client:
        client.post_message(aid, cid, "/bigframe sales 50")

    done = subprocess.run(
        [sys.executable, "-m", "tests.service.mdwe", sys.executable, "-m", "convsync", "sync", "--config",
         str(setup.config)],
        capture_output=True, text=True, cwd=REPO, env=setup.env(), timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    folder = setup.folder_of(cid)
    assert folder is not None
    assert pq.read_table(folder / "data-frames" / "sales.parquet").num_rows == 50


def status_of(setup: Setup) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convsync", "status", "--config", str(setup.config)],
        env=setup.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_says_whether_the_daemon_runs_and_folders_say_it_stopped(
    daemon: subprocess.Popen[bytes], notify_socket: NotifyListener, setup: Setup
) -> None:
    """`convsync status` names the running daemon (exit 0); after a clean stop it says NOT running with the way
    to start it (exit 3), and each conversation's status file says `daemon stopped`."""
    notify_socket.wait_for("READY=1")
    cid = setup.emu.create_conversation(setup.emu.agent_id("Demo Agent"), "Watched")
    folder = wait_until(lambda: setup.folder_of(cid), timeout=30, what="the conversation's folder")
    wait_until(lambda: (folder / "status").read_text() == "idle\n", 30, what="an idle folder")
    notify_socket.wait_for("STATUS=", times=2)  # a status interval passed: the heartbeat has the server's answer

    running = status_of(setup)

    assert running.returncode == 0, running.stdout + running.stderr
    first = running.stdout.splitlines()[0]
    assert first.startswith(f"daemon: running (pid {daemon.pid}, up "), first
    assert "server reached" in first and "not reached" not in first

    daemon.send_signal(signal.SIGTERM)
    assert setup.exit_code(daemon, notify_socket) == 0, setup.log.read_text()
    stopped = status_of(setup)

    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("daemon: NOT running (stopped ")
    assert "start it with `systemctl --user start convsync` (or run `convsync run`)" in stopped.stdout
    assert (folder / "status").read_text() == "daemon stopped\n"
