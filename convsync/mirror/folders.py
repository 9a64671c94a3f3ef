"""The tree on disk: root marker, agent and conversation folders, their identity markers, moving aside.

Every write goes through ``names.inside``/``names.child`` so nothing can land outside the root. Conversation
folders are built under a hidden temp name and renamed into place, so the watcher never sees a folder of ours
without its marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from convsync.errors import RootUnavailable
from convsync.mirror.atomic import TEMP_PREFIX, create_empty_file, fsync_dir, read_regular, write_atomic
from convsync.mirror.names import OutsideRoot, child, component, inside, keys_of, unique_name
from convsync.mirror.plan import LocalFolder, LocalListing
from convsync.mirror.prompt import PROMPT
from convsync.paths import ROOT_MARKER_NAME

ROOT_MARKER = ROOT_MARKER_NAME  # the one constant lives in convsync.paths
AGENT_MARKER = ".agent"
CONVERSATION_MARKER = ".conversation"
DELETED = ".deleted"
TRANSCRIPT = "transcript.md"
STATUS = "status"
ERRORS_LOG = "errors.log"
INBOX = "inbox"
FILES = "files"
DATA_FRAMES = "data-frames"
SUBFOLDERS = (INBOX, FILES, DATA_FRAMES)
# Files convsync itself writes in a conversation folder (their changes are not hints to act on).
OWN_FILES = frozenset({TRANSCRIPT, STATUS, ERRORS_LOG, CONVERSATION_MARKER})


def check_root(root: Path) -> None:
    """Raise ``RootUnavailable`` unless ``root`` carries its marker (an unmounted disk must not be filled)."""
    if not (root / ROOT_MARKER).is_file():
        raise RootUnavailable(
            f"the mirror root {root} has no {ROOT_MARKER} marker (is the disk mounted?); convsync does "
            "nothing until it is back. For a new root run `convsync init` (or create the empty file "
            f"{root / ROOT_MARKER})."
        )


def init_root(root: Path) -> None:
    """Create ``root`` and its marker (used by ``convsync init`` and the demo)."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / ROOT_MARKER
    if not marker.exists():
        write_atomic(marker, "This folder is a convsync mirror root. Do not delete this file.\n")


def read_marker(path: Path) -> str | None:
    """The id in a marker file (first line, stripped), or ``None`` when absent, not a regular file or
    unreadable."""
    try:
        found = read_regular(path)
    except OSError:
        return None
    if found is None:
        return None
    text = found[1].decode("utf-8", errors="replace").strip()
    return text.splitlines()[0].strip() if text else None


def write_marker(root: Path, folder: Path, name: str, ident: str) -> None:
    write_atomic(child(root, folder, name), ident + "\n")


def visible(name: str) -> bool:
    return not name.startswith(".")


def list_agent_folder(agent_dir: Path) -> LocalListing:
    """The conversation folders of ``agent_dir`` (visible, real directories) and every name in it."""
    try:
        entries = list(os.scandir(agent_dir))
    except FileNotFoundError:
        return LocalListing((), frozenset(), agent_folder_present=False)
    folders: list[LocalFolder] = []
    for entry in entries:
        if not visible(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        folders.append(LocalFolder(entry.name, read_marker(Path(entry.path) / CONVERSATION_MARKER)))
    return LocalListing(tuple(sorted(folders, key=lambda f: f.name)), frozenset(e.name for e in entries))


def find_agent_folders(root: Path) -> dict[str, str]:
    """Agent id → folder name, for every visible folder of ``root`` that has an ``.agent`` marker."""
    out: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if visible(entry.name) and entry.is_dir(follow_symlinks=False):
                ident = read_marker(Path(entry.path) / AGENT_MARKER)
                if ident and ident not in out:
                    out[ident] = entry.name
    return out


def create_agent_folder(root: Path, folder: str, agent_id: str) -> Path:
    path = child(root, root, folder)
    path.mkdir(exist_ok=True)
    if read_marker(path / AGENT_MARKER) != agent_id:
        write_marker(root, path, AGENT_MARKER, agent_id)
    return path


def populate_conversation(root: Path, folder: Path, cid: str) -> None:
    """Make ``folder`` a complete conversation folder: marker, empty prompt.txt, subfolders (idempotent)."""
    inside(root, folder)
    if read_marker(folder / CONVERSATION_MARKER) != cid:
        write_marker(root, folder, CONVERSATION_MARKER, cid)
    for sub in SUBFOLDERS:
        path = folder / sub
        if not path.is_dir() and not path.is_symlink():
            path.mkdir(exist_ok=True)
    create_empty_file(folder / PROMPT)
    create_empty_file(folder / TRANSCRIPT)
    status = folder / STATUS
    if not status.exists():
        write_atomic(status, "idle\n", durable=False)


@dataclass(frozen=True, slots=True)
class Created:
    folder: str
    path: Path


def create_conversation_folders(
    root: Path,
    agent_dir: Path,
    wanted: Sequence[tuple[str, str]],
    on_created: Callable[[Created], None] | None = None,
) -> list[Created | OSError | OutsideRoot]:
    """Build a conversation folder for each ``(folder name, conversation id)``: under a hidden temp name, then
    renamed into place; one fsync of ``agent_dir`` at the end makes the renames durable together.

    If a name got taken meanwhile (the user made that folder), a free `` (2)`` variant is used instead. The
    result holds, per item, its ``Created`` or the error that stopped it (the others still go ahead); an id
    that is no safe file name (a hostile server) is refused with ``OutsideRoot``. ``on_created`` is called as
    each folder appears under its name (before the batch is durable and bound).
    A first mirror builds a thousand folders here, so each costs few system calls: the temp folder is new,
    so its entries are created directly (no temp files, no checks, no path resolving for each).
    """
    inside(root, agent_dir)
    out: list[Created | OSError | OutsideRoot] = []
    for folder, cid in wanted:
        try:
            created = _create_one(agent_dir, folder, cid)
        except (OSError, OutsideRoot) as exc:
            out.append(exc)
            continue
        out.append(created)
        if on_created is not None:
            on_created(created)
    if any(isinstance(r, Created) for r in out):
        fsync_dir(agent_dir)
    return out


def _create_one(agent_dir: Path, folder: str, cid: str) -> Created:
    # Plain strings and os calls: pathlib's joins cost more than the system calls they wrap, a thousand times.
    tmp = os.fspath(component(agent_dir, f"{TEMP_PREFIX}{cid}"))
    try:
        os.mkdir(tmp)  # noqa: PTH102
    except FileExistsError:  # left by a crash
        shutil.rmtree(tmp)
        os.mkdir(tmp)  # noqa: PTH102
    _write_new(f"{tmp}/{CONVERSATION_MARKER}", cid + "\n")
    for sub in SUBFOLDERS:
        os.mkdir(f"{tmp}/{sub}")  # noqa: PTH102
    create_empty_file(f"{tmp}/{PROMPT}")
    create_empty_file(f"{tmp}/{TRANSCRIPT}")
    _write_new(f"{tmp}/{STATUS}", "idle\n")
    name = folder
    for _attempt in range(5):
        target = component(agent_dir, name)
        if not os.path.lexists(target):
            # A directory rename silently replaces an empty directory, so check right before: the race window
            # with a user's mkdir of the same name is microseconds wide.
            with contextlib.suppress(FileExistsError, IsADirectoryError, NotADirectoryError):
                os.rename(tmp, target)  # noqa: PTH104
                return Created(name, target)
        name = unique_name(folder, keys_of(p.name for p in agent_dir.iterdir()))
    raise FileExistsError(f"could not find a free name for {folder!r} in {agent_dir}")


def _write_new(path: str, text: str) -> None:
    """Create ``path`` (it must not exist) holding ``text``: inside a folder not yet renamed into place nobody
    can see a torn file, so no temp file is needed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def remove_stale_temp_folders(agent_dir: Path) -> None:
    """Remove half-built conversation folders left by a crash (they hold nothing of the user's)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(agent_dir):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def move_aside(root: Path, agent_folder: str, folder_path: Path) -> Path:
    """Move a conversation folder to ``<root>/.deleted/<agent folder>/<folder> <UTC timestamp>/``."""
    inside(root, folder_path)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    dest_dir = child(root, root, DELETED) / agent_folder
    inside(root, dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{folder_path.name} {stamp}"
    n = 2
    while os.path.lexists(dest):
        dest = dest_dir / f"{folder_path.name} {stamp} ({n})"
        n += 1
    folder_path.rename(dest)
    return dest


def folder_fingerprint(folder: Path) -> tuple[int, ...]:
    """What a look at a conversation folder depends on: its entries, ``prompt.txt``, ``inbox/`` and
    ``transcript.md`` (mtime and size of each). The periodic rescan looks only at folders whose fingerprint
    changed since convsync last looked, so that a thousand idle folders cost a few thousand ``stat`` calls."""
    out: list[int] = []
    for path in (folder, folder / PROMPT, folder / INBOX, folder / TRANSCRIPT):
        try:
            st = path.stat()
        except OSError:
            out += [-1, -1]
        else:
            out += [st.st_mtime_ns, st.st_size]
    return tuple(out)
