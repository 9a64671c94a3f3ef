"""Filesystem events under the mirror root → hints (the only module that imports watchdog).

A hint only says "something happened at this path"; the engine decides what to look at and re-reads the disk.
Events the kernel drops (queue overflow) or that happen while the watcher is down are caught by the engine's
periodic rescan, so a lost event costs latency, never data.

Kinds of hint: ``created``, ``modified``, ``closed`` (close after writing, Linux), ``deleted``, ``moved_from``
and ``moved_to`` (a rename shows as both; a move in from outside the root as ``moved_to`` alone).
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)


class _HarmlessStopRace(logging.Filter):
    """watchdog logs an error when its emitter thread reads once more while being stopped; nothing is lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_HarmlessStopRace())

HintKind = Literal["created", "modified", "closed", "deleted", "moved_from", "moved_to"]

_MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


@dataclass(frozen=True, slots=True)
class Hint:
    path: Path
    kind: HintKind
    is_directory: bool = False
    source: Path | None = None  # for ``moved_to``: where it came from, when that was inside the root


def watch_limit_message(root: Path, limit: int | None, rescan_seconds: float) -> str:
    shown = limit if limit is not None else "?"
    return (
        f"convsync cannot watch every folder under {root}: the inotify watch limit is reached "
        f"(fs.inotify.max_user_watches = {shown}). Changes are still found by the rescan every "
        f"{rescan_seconds:g} s, only later. Fix: sudo sysctl fs.inotify.max_user_watches=524288, and to keep "
        "it after a reboot: echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-convsync.conf"
    )


def max_user_watches() -> int | None:
    try:
        return int(_MAX_USER_WATCHES.read_text().strip())
    except (OSError, ValueError):
        return None


def count_directories(root: Path, stop_after: int) -> int:
    """Directories under ``root`` (including it), counting at most ``stop_after``."""
    count = 0
    for _dirpath, _dirnames, _files in os.walk(root):
        count += 1
        if count >= stop_after:
            break
    return count


class _Handler(FileSystemEventHandler):
    def __init__(self, on_hint: Callable[[Hint], None]) -> None:
        self._on_hint = on_hint

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            for hint in _hints_of(event):
                self._on_hint(hint)
        except Exception:  # a bug here must not kill the observer thread; the rescan still runs
            log.exception("handling the filesystem event %r failed", event)


def _path(raw: bytes | str) -> Path:
    return Path(os.fsdecode(raw))


def _hints_of(event: FileSystemEvent) -> list[Hint]:
    is_dir = event.is_directory
    if isinstance(event, FileClosedEvent):
        return [Hint(_path(event.src_path), "closed", is_dir)]
    if isinstance(event, FileMovedEvent | DirMovedEvent):
        hints = []
        if event.src_path:
            hints.append(Hint(_path(event.src_path), "moved_from", is_dir))
        if event.dest_path:
            source = _path(event.src_path) if event.src_path else None
            hints.append(Hint(_path(event.dest_path), "moved_to", is_dir, source))
        return hints
    if isinstance(event, FileCreatedEvent | DirCreatedEvent):
        return [Hint(_path(event.src_path), "created", is_dir)]
    if isinstance(event, FileDeletedEvent | DirDeletedEvent):
        return [Hint(_path(event.src_path), "deleted", is_dir)]
    if isinstance(event, FileModifiedEvent):
        return [Hint(_path(event.src_path), "modified", is_dir)]
    return []


_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
]


def _new_observer() -> BaseObserver:
    # Imported here: the inotify module only loads on Linux.
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # not Linux: the platform's observer (no close events; the quiet period applies)
        from watchdog.observers import Observer

        return Observer()
    # Full events: a file moved in from outside the root arrives as a move with an empty source, so that
    # `mv draft prompt.txt` is told apart from a file merely being created.
    return InotifyObserver(generate_full_events=True)


class Watcher:
    """Watches ``root`` recursively and calls ``on_hint`` from the observer's thread (keep it quick)."""

    def __init__(self, root: Path, on_hint: Callable[[Hint], None], *, rescan_seconds: float = 60.0) -> None:
        self.root = root
        self._on_hint = on_hint
        self._rescan_seconds = rescan_seconds
        self._observer: BaseObserver | None = None

    def start(self) -> str | None:
        """Start watching. Returns a problem for the user (e.g. the watch limit) or ``None``; never raises
        for a limit: the engine then relies on its rescans."""
        limit = max_user_watches()
        # watchdog warns when a watched folder is renamed inside the tree and its (reused) watch gets the same
        # callback again: harmless, and convsync renames its own new folders into place on purpose.
        warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)
        try:
            observer = _new_observer()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENOSPC):
                return watch_limit_message(self.root, limit, self._rescan_seconds)
            raise
        try:
            observer.schedule(_Handler(self._on_hint), str(self.root), recursive=True, event_filter=_EVENTS)
            observer.start()
        except OSError as exc:
            observer.stop()
            if exc.errno in (errno.EMFILE, errno.ENOSPC):
                return watch_limit_message(self.root, limit, self._rescan_seconds)
            raise
        self._observer = observer
        # Watches of sub-folders that cannot be added are skipped silently by watchdog: compare instead.
        if limit is not None and count_directories(self.root, limit) >= limit * 0.95:
            return watch_limit_message(self.root, limit, self._rescan_seconds)
        return None

    def stop(self, timeout: float = 5.0) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout)
