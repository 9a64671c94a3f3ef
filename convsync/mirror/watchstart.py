"""The watcher's start-up: once, after the first lists pass built the folders; again on a new root.

watchdog walks every folder it is to watch, and on a new root the first lists pass renames hundreds of
conversation folders into place: the watcher starts after that pass, so a prompt saved during a first
mirror goes out at once without watchdog paying for each folder as it appears. What changed before it was
up is for a rescan to find (the engine schedules it when ``start_once`` says it started). A watcher that
cannot start is a problem ("watch") and the rescan finds changes alone. The lists job and a reload may both
start it: a lock of its own (never held across a request) keeps it to one watcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from convsync.watch import Hint, Watcher

log = logging.getLogger(__name__)


class WatcherStartup:
    def __init__(self, on_hint: Callable[[Hint], None], problem: Callable[[str, str | None], None]) -> None:
        self._on_hint = on_hint
        self._problem = problem
        self._lock = threading.Lock()
        self._watcher: Watcher | None = None

    @property
    def running(self) -> bool:
        return self._watcher is not None

    def start_once(self, root: Path, rescan_seconds: float, stopping: Callable[[], bool]) -> bool:
        """Start the watcher unless it runs (or ``stopping``); True when it started now."""
        with self._lock:
            if self._watcher is not None or stopping():
                return False
            self._start(root, rescan_seconds)
            return True

    def restart(self, root: Path, rescan_seconds: float) -> None:
        """A new root: the running watcher watches it instead (one not started yet starts as usual)."""
        with self._lock:
            if self._watcher is not None:
                self._watcher.stop()
                self._start(root, rescan_seconds)

    def stop(self, timeout: float) -> None:
        with self._lock:
            if self._watcher is not None:
                self._watcher.stop(timeout=timeout)

    def _start(self, root: Path, rescan_seconds: float) -> None:
        watcher = Watcher(root, self._on_hint, rescan_seconds=rescan_seconds)
        try:
            problem = watcher.start()
        except OSError as exc:
            problem = f"convsync cannot watch {root} ({exc}); changes are found by the rescan only"
        if problem:
            log.warning("%s", problem)
        self._problem("watch", problem)
        self._watcher = watcher
