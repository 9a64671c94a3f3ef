"""One convsync per state directory: an ``flock`` on ``<state dir>/convsync.lock``, which holds its pid.

The kernel drops an ``flock`` when its holder dies, so a crash never leaves a stale lock; the file itself
stays (unlinking it would race with a process opening it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from convsync.errors import AlreadyRunning
from convsync.paths import ensure_private_dir

LOCK_FILE_NAME = "convsync.lock"


class InstanceLock:
    """Held while a daemon (or a one-off sync) works on a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``AlreadyRunning`` naming the holder's pid and the state directory."""
        ensure_private_dir(self.state_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise AlreadyRunning(
                f"convsync is already running ({who}) with the state directory {self.state_dir}; "
                "stop it first (systemctl --user stop convsync, or kill "
                f"{holder or 'it'}), or give this instance its own state_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder_pid(state_dir: Path) -> int | None:
    """The pid recorded by a live holder of ``state_dir``'s lock, or None (informational: for doctor/status).

    Reads the pid instead of probing the lock, so it can never make a daemon that is starting fail.
    """
    try:
        fd = os.open(state_dir / LOCK_FILE_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a crashed holder left its pid behind
    except PermissionError:
        return pid
    return pid


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0
