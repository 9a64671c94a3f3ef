"""Commands that talk to a running daemon through its control socket (`sync`, `status`, `reload`)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.control import socket_path
from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root
from tests.cli.conftest import KEY_ENV, convsync, write_config
from tests.waiting import wait_until

# Slow timers: whatever appears during a test appears because a command asked for it, not by a poll.
SLOW = "poll:\n  conversations_seconds: 600\n  rescan_seconds: 600\n  idle_seconds: 600\n"


class Running:
    def __init__(self, proc: subprocess.Popen[str], config: Path, state: Path, root: Path) -> None:
        self.proc, self.config, self.state, self.root = proc, config, state, root

    def status(self) -> dict[str, object]:
        done = convsync("status", "--json", "--config", str(self.config))
        assert done.returncode in (0, 3), done.stderr  # 3 until the daemon answers
        return dict(json.loads(done.stdout))


@pytest.fixture
def daemon(emulator: EmulatorServer, tmp_path: Path) -> Iterator[Running]:
    """`convsync run` in the background, ready (its first scan done), stopped with SIGTERM afterwards."""
    root, state = tmp_path / "root", tmp_path / "state"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, state, SLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "convsync", "run", "--config", str(config)],
        env={**os.environ, KEY_ENV: emulator.api_key},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Running(proc, config, state, root)
    try:
        wait_until(lambda: running.status()["daemon"].get("ready"), timeout=30, what="the daemon to be ready")  # type: ignore[union-attr]
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, err


def test_sync_asks_the_running_daemon_for_a_pass(daemon: Running, emulator: EmulatorServer) -> None:
    """With a daemon running, `convsync sync` makes it list the server now: a new conversation's folder exists
    when the command returns (exit 0), long before the daemon's next scheduled list poll (600 s)."""
    emulator.create_conversation(emulator.agent_id("Demo Agent"), "Made elsewhere")
    folder = daemon.root / "Demo Agent" / "Made elsewhere"
    assert not folder.exists()
    done = convsync("sync", "--config", str(daemon.config), env={KEY_ENV: emulator.api_key})
    assert done.returncode == 0, done.stderr
    assert "asked the daemon for a full pass" in done.stderr
    assert folder.is_dir()


def test_sync_through_the_daemon_needs_no_key(daemon: Running, emulator: EmulatorServer) -> None:
    """`convsync sync` with no key in the environment asks the running daemon (which has one): exit 0, not 78."""
    emulator.create_conversation(emulator.agent_id("Demo Agent"), "Asked without a key")
    assert KEY_ENV not in os.environ
    done = convsync("sync", "--config", str(daemon.config))
    assert done.returncode == 0, done.stderr
    assert (daemon.root / "Demo Agent" / "Asked without a key").is_dir()


def test_status_needs_no_key_and_lists_the_conversations(daemon: Running, emulator: EmulatorServer) -> None:
    """With the daemon running, `status` with no key in the environment exits 0 and lists the conversations."""
    emulator.create_conversation(emulator.agent_id("Demo Agent"), "Listed")
    assert convsync("sync", "--config", str(daemon.config), env={KEY_ENV: emulator.api_key}).returncode == 0
    assert KEY_ENV not in os.environ
    done = convsync("status", "--config", str(daemon.config))
    assert done.returncode == 0, done.stderr
    assert "Demo Agent/Listed" in done.stdout


def test_status_shows_the_daemons_live_figures(daemon: Running) -> None:
    """`convsync status` names the running daemon's pid and its live summary."""
    done = convsync("status", "--config", str(daemon.config))
    assert done.returncode == 0, done.stderr
    assert f"daemon: running (pid {daemon.proc.pid}, up " in done.stdout  # uptime etc. from its heartbeat
    document = daemon.status()
    live = {k: document["daemon"][k] for k in ("running", "pid", "ready", "conversations", "queued_prompts")}
    assert live == {"running": True, "pid": daemon.proc.pid, "ready": True, "conversations": 0, "queued_prompts": 0}
    assert (document["daemon"]["queued_uploads"], document["daemon"]["last_error"]) == (0, None)
    assert document["daemon"]["text"].startswith(f"running (pid {daemon.proc.pid}, up ")


def test_reload_makes_the_daemon_reread_its_config(daemon: Running) -> None:
    """`convsync reload` returns 0 once the daemon has re-read the config; a broken config is refused (78)."""
    done = convsync("reload", "--config", str(daemon.config))
    assert done.returncode == 0, done.stderr
    text = daemon.config.read_text()
    daemon.config.write_text(text + "log_level: loud\n")
    broken = convsync("reload", "--config", str(daemon.config))
    assert broken.returncode == 78
    assert "log_level" in broken.stderr


def test_the_socket_is_private(daemon: Running) -> None:
    """The control socket is 0600 in a 0700 folder."""
    path = socket_path(daemon.state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_reload_without_a_daemon_exits_75(tmp_path: Path, emulator: EmulatorServer) -> None:
    """`convsync reload` with no daemon running says so and exits 75."""
    config = write_config(tmp_path / "config.yaml", emulator.base_url, tmp_path / "root", tmp_path / "state")
    done = convsync("reload", "--config", str(config))
    assert done.returncode == 75
    assert "no convsync daemon runs" in done.stderr


def test_status_without_a_daemon_says_it_is_not_running(tmp_path: Path, emulator: EmulatorServer) -> None:
    """`convsync status --json` before any daemon ran: daemon.running is false, schema_version 1, exit 0."""
    config = write_config(tmp_path / "config.yaml", emulator.base_url, tmp_path / "root", tmp_path / "state")
    done = convsync("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema_version"] == 1
    assert document["daemon"] == {
        "running": False,
        "text": "not started (no daemon has run with this state directory) — start it with "
        "`systemctl --user start convsync` (or run `convsync run`)",
        "started": None,
        "last_contact": None,
        "stopped": None,
    }
