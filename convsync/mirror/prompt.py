"""Taking ``prompt.txt``: every save from any editor becomes exactly one prompt, and no text is ever lost.

When to take (decided by the caller, see ``should_take``): after a close-after-write or a rename onto
``prompt.txt`` (the watcher's signal), or — for events the watcher missed — when a non-empty ``prompt.txt``
has not changed for ``QUIET_SECONDS`` and no process holds it open for writing (``cat >`` typed by hand).

How to take (``take``), so that text typed meanwhile is never lost:

1. exchange ``prompt.txt`` with a new empty ``.prompt.taking`` in one atomic step (Linux; elsewhere: rename
   ``prompt.txt`` → ``.prompt.taking``). A writer still holding the file keeps writing into the taken file,
   which step 5 notices; an editor saving by name writes the new ``prompt.txt``;
2. read it; strip surrounding whitespace; an empty result is no prompt;
3. store it in the outbox (committed to SQLite) together with the sha256 of the bytes read and the taken
   file's identity (device, inode, ctime, size: ``file_identity``);
4. (after a plain rename) create an empty ``prompt.txt`` only if none exists (``O_EXCL``: a racing save wins);
5. if ``.prompt.taking`` grew meanwhile, the extra text becomes a further prompt; then unlink it.

A ``.prompt.taking`` left by a crash is recovered first: a stored entry has its identity → deleted, else
taken. Its identity decides, never its text: a save that repeats the previous prompt word for word is a
second prompt (the exchange gave the taking file a new ctime, so no earlier take has its identity).

Only ``prompt.txt`` and ``.prompt.taking`` are ever read: the artefacts editors leave next to it (``4913``,
``prompt.txt~``, ``.prompt.txt.swp``, ``.#prompt.txt``, ``prompt.txt___jb_tmp___``…) never are.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from convsync import killpoints
from convsync.mirror.atomic import create_empty_file, write_atomic

PROMPT = "prompt.txt"
TAKING = ".prompt.taking"
QUIET_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Taken:
    text: str  # what will be sent: the file's text without surrounding whitespace
    sha256: str  # of the bytes read
    identity: str = ""  # of the taken file as read (``file_identity``); stored with the entry


class NotText(Exception):
    """``prompt.txt`` holds bytes that are not UTF-8 text; ``kept_as`` is where they were moved."""

    def __init__(self, kept_as: Path) -> None:
        self.kept_as = kept_as
        super().__init__(f"prompt.txt is not UTF-8 text; it was moved to {kept_as.name}")


def should_take(size: int, mtime: float, *, signalled: bool, now: float, open_for_writing: Callable[[], bool]) -> bool:
    """Pure-ish decision whether a non-empty ``prompt.txt`` is a finished save."""
    if size == 0:
        return False
    if signalled:
        return True
    return now - mtime >= QUIET_SECONDS and not open_for_writing()


def decode_prompt(raw: bytes) -> str | None:
    """The prompt text of ``raw`` (BOM and surrounding whitespace removed); ``None`` if it is not text."""
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_prompt_file(folder: Path) -> bool:
    """Create an empty ``prompt.txt`` unless one exists (never replaces a file); True if it created one."""
    return create_empty_file(folder / PROMPT)


def take(
    folder: Path,
    store: Callable[[Taken], None],
    is_stored: Callable[[str], bool],
) -> list[Taken]:
    """Take ``prompt.txt`` (and a leftover ``.prompt.taking``) as described in the module docstring.

    ``store`` must commit the prompt (with ``Taken.identity``) durably before it returns; ``is_stored(identity)``
    tells whether an entry of this conversation was stored with that file identity.
    Returns what was stored. Raises ``NotText`` (after moving the bytes aside).
    """
    stored: list[Taken] = []
    taking = folder / TAKING
    if taking.exists():
        stored += _finish_taking(folder, taking, store, is_stored, recovering=True)
    if not _swap_in_empty(folder / PROMPT, taking):
        try:
            (folder / PROMPT).rename(taking)
        except FileNotFoundError:
            return stored
    killpoints.reached("prompt.exchanged")
    stored += _finish_taking(folder, taking, store, is_stored, recovering=False)
    return stored


def _swap_in_empty(prompt: Path, taking: Path) -> bool:
    """Exchange ``prompt`` with a new empty file in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so that
    ``prompt.txt`` never goes missing, not even for a moment. False when the system or filesystem cannot
    exchange (the caller then renames, and ``prompt.txt`` is recreated right after) or ``prompt`` is gone."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if not create_empty_file(taking):
        raise FileExistsError(f"{taking} exists")  # the caller recovers a leftover before coming here
    if renameat2(_AT_FDCWD, os.fsencode(prompt), _AT_FDCWD, os.fsencode(taking), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    taking.unlink(missing_ok=True)
    if err == errno.ENOENT:
        return False  # nothing to take; the caller's rename finds that out too
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(prompt))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's ``renameat2`` (2.28+), or ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    func = getattr(libc, "renameat2", None)
    if func is None:
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return cast(Callable[..., int], func)


def _finish_taking(
    folder: Path,
    taking: Path,
    store: Callable[[Taken], None],
    is_stored: Callable[[str], bool],
    *,
    recovering: bool,
) -> list[Taken]:
    stored: list[Taken] = []
    raw, identity = _read_with_identity(taking)
    digest = sha256_hex(raw)
    text = decode_prompt(raw)
    if text is None:
        kept = folder / f"prompt.not-text.{int(time.time())}.txt"
        taking.rename(kept)
        ensure_prompt_file(folder)
        raise NotText(kept)
    if text and not (recovering and is_stored(identity)):
        taken = Taken(text, digest, identity)
        store(taken)
        killpoints.reached("prompt.stored")
        stored.append(taken)
    ensure_prompt_file(folder)
    # A writer that still held prompt.txt open wrote into the taken file: that text is a prompt too.
    with contextlib.suppress(FileNotFoundError):
        now_raw, now_identity = _read_with_identity(taking)
        if len(now_raw) > len(raw) and now_raw.startswith(raw):
            extra = decode_prompt(now_raw[len(raw) :])
            if extra:
                taken = Taken(extra, sha256_hex(now_raw), now_identity)
                store(taken)
                killpoints.reached("prompt.stored")
                stored.append(taken)
    taking.unlink(missing_ok=True)
    killpoints.reached("prompt.taken")
    return stored


def file_identity(st: os.stat_result, size: int) -> str:
    """Which file, in which state: device, inode, ctime (ns) and the size read.

    The exchange (or rename) that makes a file ``.prompt.taking`` sets its ctime, and a write sets it again,
    so a later file that reuses the inode number (ext4 reuses them at once) has another ctime, and a file that
    grew has another size: equal identities mean the very file, unchanged since it was read.
    """
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}:{size}"


def _read_with_identity(path: Path) -> tuple[bytes, str]:
    with path.open("rb") as f:
        raw = f.read()
        st = os.fstat(f.fileno())
    # A writer appending between the read and the fstat gives a size that is not len(raw): the identity then
    # never matches, and a recovery takes the file again rather than dropping text.
    return raw, file_identity(st, len(raw) if st.st_size == len(raw) else -1)


def open_for_writing(path: Path) -> bool:
    """Whether some process holds ``path`` open for writing (Linux ``/proc``; False where unavailable).

    Only consulted on the rare quiet-period fallback, never on the watcher's fast path.
    """
    try:
        target = path.stat()
    except OSError:
        return False
    proc = Path("/proc")
    if not (proc / "self" / "fdinfo").is_dir():
        return False
    me = os.getpid()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = fd.stat()
            except OSError:
                continue
            if st.st_ino != target.st_ino or st.st_dev != target.st_dev:
                continue
            try:
                info = (pid_dir / "fdinfo" / fd.name).read_text()
            except OSError:
                continue
            match = re.search(r"^flags:\s*([0-7]+)", info, re.MULTILINE)
            if match and int(match.group(1), 8) & (os.O_WRONLY | os.O_RDWR):
                return True
    return False


def write_failed_prompt(folder: Path, seq: int, text: str) -> Path:
    """Keep a prompt the server refused as ``prompt.failed-<UTC time>.txt``: nothing the user wrote is lost.

    Named by when it failed (``2026-12-04T16-58-03Z``: sorts by time, no colons for other systems), not by
    the queue's internal number; a second failure within the same second gets ``-2``, ``-3``….
    """
    del seq  # the queue's number means nothing to the user
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    path = folder / f"prompt.failed-{stamp}.txt"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"prompt.failed-{stamp}-{counter}.txt"
    write_atomic(path, text + "\n")
    return path
