"""Single instance: an flock on <state dir>/convsync.lock holding the pid, and one on the root's marker."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.errors import AlreadyRunning
from convsync.lock import InstanceLock, RootLock, holder_pid
from convsync.mirror.folders import init_root
from tests.waiting import wait_until


def test_lock_records_our_pid_in_a_private_file(tmp_path: Path) -> None:
    """The lock file holds our pid, is 0600, and its state dir is created 0700."""
    state = tmp_path / "state"

    with InstanceLock(state) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_second_lock_is_refused_naming_pid_and_state_dir(tmp_path: Path) -> None:
    """While the lock is held, another acquire raises AlreadyRunning naming the holder's pid and the dir."""
    with InstanceLock(tmp_path), pytest.raises(AlreadyRunning) as caught:
        InstanceLock(tmp_path).acquire()

    assert f"pid {os.getpid()}" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_lock_is_free_again_after_release(tmp_path: Path) -> None:
    """After release another instance may take the lock."""
    first = InstanceLock(tmp_path)
    first.acquire()
    first.release()

    second = InstanceLock(tmp_path)
    second.acquire()
    second.release()


def test_holder_pid_reports_a_live_holder_only(tmp_path: Path) -> None:
    """holder_pid names the pid while the lock is held and None after release."""
    lock = InstanceLock(tmp_path)
    lock.acquire()
    assert holder_pid(tmp_path) == os.getpid()

    lock.release()

    assert holder_pid(tmp_path) is None


def test_stale_pid_of_a_dead_process_is_not_a_holder(tmp_path: Path) -> None:
    """A pid left behind by a crashed holder (no such process) does not count."""
    (tmp_path / "convsync.lock").write_text("999999999\n")

    assert holder_pid(tmp_path) is None
    with InstanceLock(tmp_path):
        pass


def test_a_second_instance_on_the_same_root_is_refused_naming_pid_and_state_dir(tmp_path: Path) -> None:
    """Two state directories, one root: the second RootLock raises AlreadyRunning with the first's pid and state
    directory (found through /proc), and nothing is written into the root."""
    root = tmp_path / "root"
    init_root(root)
    before = sorted(p.name for p in root.iterdir())
    first_state = tmp_path / "state-a"
    with InstanceLock(first_state), RootLock(root, first_state):
        with InstanceLock(tmp_path / "state-b"), pytest.raises(AlreadyRunning) as caught:
            RootLock(root, tmp_path / "state-b").acquire()
        assert sorted(p.name for p in root.iterdir()) == before
    assert f"pid {os.getpid()}" in str(caught.value)
    assert f"state directory {first_state}" in str(caught.value)
    assert str(root) in str(caught.value)
    with RootLock(root, tmp_path / "state-b"):  # free again once released
        pass


def test_sync_on_a_root_another_daemon_mirrors_exits_73(tmp_path: Path) -> None:
    """A real `convsync run` holds the root; `convsync sync` with another state_dir exits 73 naming it."""
    root = tmp_path / "root"
    init_root(root)
    key = "s4w_lock-test"
    with EmulatorServer(EmulatorOptions(api_key=key)) as emu:
        configs = []
        for name in ("a", "b"):
            config = tmp_path / f"{name}.yaml"
            config.write_text(
                f"server:\n  url: {emu.base_url}\n  api_key_env: CONVSYNC_API_KEY\n"
                f"root: {root}\nstate_dir: {tmp_path / ('state-' + name)}\n"
            )
            configs.append(config)
        env = {**os.environ, "CONVSYNC_API_KEY": key}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "convsync", "run", "--config", str(configs[0])],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until((tmp_path / "state-a" / "state.db").exists, timeout=30)
            done = subprocess.run(
                [sys.executable, "-m", "convsync", "sync", "--config", str(configs[1])],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    assert done.returncode == 73, done.stderr
    assert f"pid {daemon.pid}" in done.stderr
    assert f"state directory {tmp_path / 'state-a'}" in done.stderr
