"""Single instance: an flock on <state dir>/convsync.lock holding the pid; a second instance is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from convsync.errors import AlreadyRunning
from convsync.lock import InstanceLock, holder_pid


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
