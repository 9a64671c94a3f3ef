"""``inbox/``: which dropped files are complete, and uploading them.

Deciding is pure over directory listings (``list_inbox`` reads the folder, ``InboxTracker.update`` decides);
``upload`` carries a decision out. The rules are documented in ``docs/files.md``:

* temp names of browsers, rsync and editors, and every hidden (dot) file, are ignored until renamed;
* a regular file is ready once its ``(size, mtime_ns, inode)`` has stayed the same for the quiet period after
  a close-after-write or a move into the folder (a *hint*), or for the longer unhinted quiet period when no
  hint came (a missed event, a file found at start-up);
* directories, symlinks (never followed), other special files, unreadable files, files whose name is not UTF-8
  and files that stay empty are left in place and reported once; they are looked at again when they change.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from convsync import killpoints
from convsync.api.client import AgentClient, Progress
from convsync.api.models import RemoteFile
from convsync.errors import BadRequest, TransientError
from convsync.mirror.atomic import fsync_dir

INBOX_DIR = "inbox"
FILES_DIR = "files"

DEFAULT_QUIET_SECONDS = 1.0
# Without a close/move hint the writer may merely be pausing: wait longer before trusting the silence.
DEFAULT_UNHINTED_QUIET_SECONDS = 3.0

_HASH_CHUNK = 1024 * 1024

# Names written by browsers, download managers and editors while a file is incomplete or as a side product.
_TEMP_SUFFIXES = (
    ".part",  # Firefox, wget2, many download managers
    ".partial",  # old Edge / IE
    ".crdownload",  # Chrome, Chromium, Edge
    ".download",  # Safari
    ".opdownload",  # Opera
    ".filepart",  # WinSCP
    ".!qb",  # qBittorrent
    ".swp",  # vim swap files (hidden anyway when vim names them .x.swp; not always)
    ".swo",
    ".swx",
    ".kate-swp",  # Kate
    "~",  # emacs/vim/gedit backups
    "___jb_tmp___",  # JetBrains safe-write
    "___jb_old___",
)
_TEMP_PREFIXES = (
    ".",  # every hidden file: rsync's .name.XXXXXX, emacs' .#name locks, gedit's .goutputstream-*, our temps
    "~$",  # Microsoft Office owner files
    "#",  # emacs auto-save files #name#
)
_TEMP_NAMES = frozenset({"4913"})  # vim's probe whether it may write in the folder


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temp, lock, backup or hidden file: never uploaded while it has that name."""
    lower = name.lower()
    return name in _TEMP_NAMES or lower.startswith(_TEMP_PREFIXES) or lower.endswith(_TEMP_SUFFIXES)


# --- what a directory entry is ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSig:
    """What stays the same over the quiet period: a write changes size or mtime, a replacement the inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSig:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


class EntryKind(Enum):
    FILE = "file"  # a regular, readable file with a name we can send: a candidate
    EMPTY = "empty"  # a regular file of zero bytes (perhaps about to be written)
    TEMP = "temp"  # ignored silently until renamed
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    SPECIAL = "special"  # fifo, socket, device
    UNREADABLE = "unreadable"
    BAD_NAME = "bad-name"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One name in ``inbox/`` as ``lstat`` saw it (symlinks are never followed)."""

    name: str
    kind: EntryKind
    sig: FileSig
    mode: int = 0


def _name_is_sendable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
        return False
    return True


def classify(name: str, st: os.stat_result, readable: bool = True) -> EntryKind:
    """The kind of one inbox entry from its ``lstat`` result (pure)."""
    if is_temp_name(name):
        return EntryKind.TEMP
    if stat.S_ISLNK(st.st_mode):
        return EntryKind.SYMLINK
    if stat.S_ISDIR(st.st_mode):
        return EntryKind.DIRECTORY
    if not stat.S_ISREG(st.st_mode):
        return EntryKind.SPECIAL
    if not _name_is_sendable(name):
        return EntryKind.BAD_NAME
    if not readable:
        return EntryKind.UNREADABLE
    if st.st_size == 0:
        return EntryKind.EMPTY
    return EntryKind.FILE


def list_inbox(inbox: Path) -> list[InboxEntry]:
    """Every entry of ``inbox`` (empty when the folder is missing), without following symlinks.

    Readability is checked with ``access()``, never by opening: an open would itself raise inotify events and
    make the watcher hint the folder again.
    """
    entries: list[InboxEntry] = []
    try:
        scan = os.scandir(inbox)
    except (FileNotFoundError, NotADirectoryError):
        return entries
    with scan:
        for item in scan:
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone between listing and stat
                continue
            readable = True
            if stat.S_ISREG(st.st_mode):
                readable = os.access(item.path, os.R_OK)
            kind = classify(item.name, st, readable)
            entries.append(InboxEntry(item.name, kind, FileSig.of(st), st.st_mode))
    entries.sort(key=lambda e: e.name)
    return entries


# --- deciding what is ready ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxProblem:
    """A file left in ``inbox/``; ``reason`` is one line for ``errors.log`` that says what to do."""

    name: str
    reason: str


def problem_text(kind: EntryKind) -> str:
    """The ``errors.log`` text for an entry that is left in place."""
    return {
        EntryKind.DIRECTORY: "is a folder; only files are uploaded - zip it, or move its files into inbox/",
        EntryKind.SYMLINK: "is a symbolic link; links are never followed - copy the file itself into inbox/",
        EntryKind.SPECIAL: "is not a regular file (pipe, socket or device) and cannot be uploaded; remove it",
        EntryKind.UNREADABLE: "cannot be read (permission denied); make it readable (chmod u+r) to upload it",
        EntryKind.BAD_NAME: "has a name that is not valid UTF-8 and cannot be sent; rename it",
        EntryKind.EMPTY: "is empty; empty files are not uploaded - write content to it, or delete it",
    }.get(kind, "cannot be uploaded")


@dataclass(frozen=True, slots=True)
class ReadyFile:
    """A file judged complete, with the signature it had then (``upload`` checks it did not change since)."""

    name: str
    sig: FileSig


@dataclass(frozen=True, slots=True)
class InboxScan:
    """One decision over ``inbox/``.

    ``ready`` go up now, together. ``waiting`` are files still settling (a prompt saved after them waits for
    them). ``problems`` are newly found (or changed) entries to report once. ``recheck_in`` is when to look
    again even if no event arrives (the end of the nearest quiet period), ``None`` when nothing is settling.
    """

    ready: tuple[ReadyFile, ...] = ()
    waiting: tuple[str, ...] = ()
    problems: tuple[InboxProblem, ...] = ()
    recheck_in: float | None = None


@dataclass(slots=True)
class _Seen:
    sig: FileSig
    since: float  # monotonic time the current signature was first seen
    hinted_at: float | None = None  # monotonic time of the last close/move hint
    hinted_wall_ns: int = 0  # wall clock of that hint, compared with the file's mtime


_SETTLING = (EntryKind.FILE, EntryKind.EMPTY)


@dataclass(slots=True)
class InboxTracker:
    """Remembers, per conversation, how long each inbox file has been unchanged and what was reported.

    Not thread-safe: one conversation's worker owns its tracker.
    """

    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    unhinted_quiet_seconds: float = DEFAULT_UNHINTED_QUIET_SECONDS
    clock: Callable[[], float] = time.monotonic
    wall_clock_ns: Callable[[], int] = time.time_ns
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _pending_hints: dict[str, tuple[float, int]] = field(default_factory=dict)
    _reported: dict[str, tuple[EntryKind, FileSig, int]] = field(default_factory=dict)

    def hint(self, name: str) -> None:
        """A close-after-write or a move into ``inbox/`` happened for ``name`` (from the watcher)."""
        when = (self.clock(), self.wall_clock_ns())
        seen = self._seen.get(name)
        if seen is None:
            self._pending_hints[name] = when
        else:
            seen.hinted_at, seen.hinted_wall_ns = when

    def forget(self, name: str) -> None:
        """Drop what is known about ``name`` (it was uploaded and moved away)."""
        self._seen.pop(name, None)
        self._pending_hints.pop(name, None)
        self._reported.pop(name, None)

    def scan(self, inbox: Path) -> InboxScan:
        """Read ``inbox`` and decide (``list_inbox`` + ``update``)."""
        return self.update(list_inbox(inbox))

    def update(self, entries: Iterable[InboxEntry], now: float | None = None) -> InboxScan:
        """Decide over a fresh listing; the only input besides the listing is time."""
        now = self.clock() if now is None else now
        ready: list[ReadyFile] = []
        waiting: list[str] = []
        problems: list[InboxProblem] = []
        recheck: float | None = None
        present: set[str] = set()
        for entry in entries:
            present.add(entry.name)
            if entry.kind is EntryKind.TEMP:
                continue
            if entry.kind not in _SETTLING:
                self._seen.pop(entry.name, None)
                problems.extend(self._report(entry))
                continue
            remaining = self._remaining_quiet(entry, now)
            if remaining > 0:
                waiting.append(entry.name)
                recheck = remaining if recheck is None else min(recheck, remaining)
            elif entry.kind is EntryKind.EMPTY:
                problems.extend(self._report(entry))
            else:
                self._reported.pop(entry.name, None)
                ready.append(ReadyFile(entry.name, entry.sig))
        for gone in [n for n in self._seen if n not in present]:
            del self._seen[gone]
        for gone in [n for n in self._reported if n not in present]:
            del self._reported[gone]
        for gone in [n for n in self._pending_hints if n not in present]:
            del self._pending_hints[gone]
        return InboxScan(tuple(ready), tuple(waiting), tuple(problems), recheck)

    def _remaining_quiet(self, entry: InboxEntry, now: float) -> float:
        seen = self._seen.get(entry.name)
        if seen is None or seen.sig != entry.sig:
            seen = _Seen(entry.sig, now)
            if entry.name in self._pending_hints:
                seen.hinted_at, seen.hinted_wall_ns = self._pending_hints.pop(entry.name)
            elif previous := self._seen.get(entry.name):
                seen.hinted_at, seen.hinted_wall_ns = previous.hinted_at, previous.hinted_wall_ns
            self._seen[entry.name] = seen
        # A hint counts only if it came after the last write: a write after the close means it was reopened.
        hinted = seen.hinted_at is not None and seen.hinted_wall_ns >= entry.sig.mtime_ns
        if hinted and seen.hinted_at is not None:
            start = max(seen.since, seen.hinted_at)
            return self.quiet_seconds - (now - start)
        return self.unhinted_quiet_seconds - (now - seen.since)

    def _report(self, entry: InboxEntry) -> list[InboxProblem]:
        key = (entry.kind, entry.sig, entry.mode)
        if self._reported.get(entry.name) == key:
            return []
        self._reported[entry.name] = key
        return [InboxProblem(entry.name, problem_text(entry.kind))]


# --- uploading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What ``upload`` did.

    - ``remote``: the server's file objects for every name handled, including files that changed during their
      upload; record each ``file_ref`` → ``remote_version`` as known, so it is not downloaded back.
    - ``moved``: now in ``files/``.
    - ``already_there``: moved without an upload, as the server already held the same bytes (a crash between
      upload and move).
    - ``changed``: left in ``inbox/`` because they changed; uploaded again once stable.
    - ``failed``: left in ``inbox/``, refused by the server or unreadable; report them in ``errors.log``.
    """

    remote: tuple[RemoteFile, ...] = ()
    moved: tuple[str, ...] = ()
    already_there: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    failed: tuple[InboxProblem, ...] = ()


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _current_sig(path: Path) -> FileSig | None:
    """The signature of the regular file at ``path``; ``None`` when it is gone or became something else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return FileSig.of(st) if stat.S_ISREG(st.st_mode) else None


def _unreadable_reason(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        return problem_text(EntryKind.UNREADABLE)
    except OSError as exc:
        return f"cannot be opened ({exc.strerror}); it stays in inbox/"
    os.close(fd)
    return None


def _send(
    client: AgentClient,
    aid: str,
    cid: str,
    batch: Sequence[tuple[str, Path]],
    progress: Progress | None,
) -> tuple[list[RemoteFile], list[InboxProblem]]:
    """One multipart request; when the server refuses a batch, each file goes alone to find the culprit."""
    try:
        return client.upload_files(aid, cid, batch, progress), []
    except BadRequest as exc:
        if len(batch) == 1:
            return [], [InboxProblem(batch[0][0], f"was refused by the server: {exc}; rename or remove it")]
    uploaded: list[RemoteFile] = []
    failed: list[InboxProblem] = []
    for one in batch:
        ok, bad = _send(client, aid, cid, [one], progress)
        uploaded += ok
        failed += bad
    return uploaded, failed


def _move_into_files(src: Path, files_dir: Path) -> str | None:
    """Atomically move ``src`` to ``files/`` under the same name; the problem text when that is impossible."""
    dest = files_dir / src.name
    try:
        files_dir.mkdir(exist_ok=True)
        if dest.is_dir() and not dest.is_symlink():
            return "was uploaded, but files/ holds a folder of the same name; rename that folder"
        src.replace(dest)  # replaces an older files/<name>: the server replaced that file_ref too
    except OSError as exc:
        return f"was uploaded, but could not be moved to files/ ({exc.strerror})"
    return None


def upload(
    client: AgentClient,
    aid: str,
    cid: str,
    folder: Path,
    files: Sequence[ReadyFile],
    *,
    progress: Progress | None = None,
) -> UploadOutcome:
    """Upload ready files of ``folder/inbox`` in one request and move each to ``folder/files``.

    Raises ``TransientError`` (nothing was moved; retry later with backoff) and ``AuthError``/``NotFound`` as
    the client does. ``progress(done, total)`` reports the bytes of the whole request. A file in none of the
    outcome's lists (its batch was cut short by another file changing) stays in ``inbox/`` and is ready again
    at the next scan.
    """
    inbox, files_dir = folder / INBOX_DIR, folder / FILES_DIR
    changed: list[str] = []
    failed: list[InboxProblem] = []
    todo: list[ReadyFile] = []
    for ready in files:  # stability re-checked right before: the decision may be a little old
        path = inbox / ready.name
        if _current_sig(path) != ready.sig:
            changed.append(ready.name)
        elif reason := _unreadable_reason(path):
            failed.append(InboxProblem(ready.name, reason))
        else:
            todo.append(ready)
    if not todo:
        return UploadOutcome(changed=tuple(changed), failed=tuple(failed))

    already, send, remote = _already_on_server(client, aid, cid, inbox, todo)
    sent: list[ReadyFile] = []
    if send:
        try:
            uploaded, refused = _send(client, aid, cid, [(r.name, inbox / r.name) for r in send], progress)
        except TransientError:
            # The client aborts a request when a file grows or shrinks under it: that is no server failure.
            moving = [r.name for r in send if _current_sig(inbox / r.name) != r.sig]
            if not moving:
                raise
            changed += moving
        else:
            killpoints.reached("upload.committed")
            remote += uploaded
            failed += refused
            sent = [r for r in send if r.name not in {p.name for p in refused}]

    moved: list[str] = []
    for ready in [*already, *sent]:
        path = inbox / ready.name
        if _current_sig(path) != ready.sig:  # written to while it was read: never leave a torn copy as done
            changed.append(ready.name)
        elif problem := _move_into_files(path, files_dir):
            failed.append(InboxProblem(ready.name, problem))
        else:
            killpoints.reached("upload.moved")
            moved.append(ready.name)
    if moved:
        fsync_dir(files_dir)
        fsync_dir(inbox)
    return UploadOutcome(
        remote=tuple(remote),
        moved=tuple(moved),
        already_there=tuple(r.name for r in already if r.name in moved),
        changed=tuple(changed),
        failed=tuple(failed),
    )


def _already_on_server(
    client: AgentClient, aid: str, cid: str, inbox: Path, todo: Sequence[ReadyFile]
) -> tuple[list[ReadyFile], list[ReadyFile], list[RemoteFile]]:
    """Split ``todo`` into files the server holds byte for byte under the same name, and files to send.

    Crash safety: such a file was uploaded before a crash interrupted its move. Only a file whose size matches
    is hashed, so a normal upload does not read the file twice.
    """
    on_server = {f.file_ref: f for f in client.list_files(aid, cid)}
    already: list[ReadyFile] = []
    send: list[ReadyFile] = []
    remote: list[RemoteFile] = []
    for ready in todo:
        known = on_server.get(ready.name)
        candidate = known is not None and bool(known.sha256) and known.size == ready.sig.size
        if known and candidate and sha256_file(inbox / ready.name) == (known.sha256 or "").lower():
            already.append(ready)
            remote.append(known)
        else:
            send.append(ready)
    return already, send, remote
