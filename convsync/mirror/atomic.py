"""Writing files so that a reader never sees a torn one: temp file + fsync + rename, or one whole append.

Temp files are named ``.convsync-tmp-<random>-<name>`` in the target's own folder (same filesystem, so the
rename is atomic); the watcher and every scanner ignore names starting with ``TEMP_PREFIX``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from convsync import killpoints

TEMP_PREFIX = ".convsync-tmp-"


def temp_path_for(target: Path) -> Path:
    """A fresh temp name next to ``target`` (kept short so long target names still fit in 255 bytes)."""
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{target.name[:100]}")


def fsync_dir(folder: Path) -> None:
    """Make a rename or create in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``target`` with ``data`` atomically: readers see the old or the new content, never a mix."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temp_path_for(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        killpoints.reached("atomic.renamed")
        fsync_dir(target.parent)


def append_record(target: Path, data: bytes | str) -> int:
    """Append ``data`` in one ``write`` to an ``O_APPEND`` descriptor (a whole record); returns the size."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:  # a regular file takes the whole buffer in one write unless the disk is full
            written = os.write(fd, view)
            view = view[written:]
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def create_empty_file(path: Path | str) -> bool:
    """Create ``path`` as an empty file unless something exists there; True if it was created.

    ``mknod`` creates it without opening it, so no close-after-write event follows (which the watcher would
    take for a user's save); where that is not allowed, it is opened and closed.
    """
    try:
        os.mknod(path, 0o644 | stat.S_IFREG)
    except FileExistsError:
        return False
    except (PermissionError, NotImplementedError, AttributeError):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return False
    return True


def read_regular(path: Path, offset: int = 0) -> tuple[int, bytes] | None:
    """(size, the bytes from ``offset`` on) of the regular file ``path``; ``None`` if it is missing, a symlink,
    or not a regular file. Four system calls (``Path.read_bytes`` makes nine): the engine reads markers, the
    status and the transcript's tail on every pass over a conversation."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size <= offset:
            return st.st_size, b""
        chunks = [os.pread(fd, st.st_size - offset, offset)]
        pos = offset + len(chunks[-1])
        while chunks[-1]:  # the file may have grown since fstat
            chunks.append(os.pread(fd, 1 << 16, pos))
            pos += len(chunks[-1])
        return max(st.st_size, pos), b"".join(chunks)
    finally:
        os.close(fd)
