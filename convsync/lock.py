"""One convsync per state directory and one per mirror root: an ``flock`` on ``<state dir>/convsync.lock``
(which holds the pid) and one on the root's marker ``<root>/.convsync-root``.

Two daemons with different state directories on one root would each take the same prompt and upload the same
file, and detach each other's conversations: the root's own lock refuses the second one.

The kernel drops an ``flock`` when its holder dies, so a crash never leaves a stale lock; the file itself
stays (unlinking it would race with a process opening it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from convsync.errors import AlreadyRunning
from convsync.paths import ROOT_MARKER_NAME, ensure_private_dir

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


class RootLock:
    """Held while a daemon (or a one-off sync) works on a mirror root, whatever its state directory.

    The lock is an ``flock`` on the root's own marker (``.convsync-root``), opened read-only: nothing is
    written into the root, so a run that has nothing to do changes nothing there. A refused instance finds the
    holder's pid in ``/proc/locks`` and its state directory from the state lock that process holds open.
    """

    def __init__(self, root: Path, state_dir: Path) -> None:
        self.root = root
        self.state_dir = state_dir
        self.path = root / ROOT_MARKER_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``AlreadyRunning`` naming the holder's pid and state directory. A root without
        its marker (an unmounted disk) is not locked here: convsync refuses to work on it anyway."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _flock_holder(os.fstat(fd))
            os.close(fd)
            state = _state_dir_of(pid) if pid else None
            raise AlreadyRunning(
                f"another convsync (pid {pid or '?'}, state directory {state or '?'}) is mirroring the root "
                f"{self.root}; two would take the same prompts and files twice. Stop it first, or give this "
                "instance its own root"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RootLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _flock_holder(st: os.stat_result) -> int:
    """The pid ``/proc/locks`` names for an flock on the file ``st`` (0 when unknown or not Linux)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(st.st_dev),
                os.minor(st.st_dev),
            ):
                return int(fields[4])
        except ValueError:
            continue
    return 0


def _state_dir_of(pid: int) -> str | None:
    """The state directory whose lock ``pid`` holds open (Linux ``/proc``; None when it cannot be seen)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.endswith("/" + LOCK_FILE_NAME):
            return target[: -len(LOCK_FILE_NAME) - 1]
    return None


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
