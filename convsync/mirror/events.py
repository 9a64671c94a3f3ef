"""File events → jobs: a watcher's hint routed (``routing.route``) and scheduled, debounced.

Called on the watcher's thread. A prompt saved in a conversation folder that is being built or bound is not
lost: the save is remembered (an "orphan" signal) and handed to the conversation when it is bound, atomically
with the routing under the lock it is handed (the engine's). Folders convsync is building are its own:
events inside them are ignored until they are bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from convsync.api.ratelimit import Lane
from convsync.mirror.conversation import Flags
from convsync.mirror.routing import route
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.scheduler import ConversationJob, Scheduler
from convsync.mirror.selection import Selection
from convsync.watch import Hint


class FileEvents:
    def __init__(
        self,
        *,
        lock: AbstractContextManager[object],
        sched: Scheduler,
        selection: Selection,
        runtimes: Runtimes,
        root: Callable[[], Path],
        debounce: Callable[[], float],
    ) -> None:
        self._lock = lock
        self._sched = sched
        self._selection = selection
        self._runtimes = runtimes
        self._root = root
        self._debounce = debounce  # seconds
        self._orphan_signals: set[tuple[str, str]] = set()  # prompt saves in folders not bound yet
        self._building: set[tuple[str, str]] = set()  # (agent folder, folder) built but not bound yet

    def on_hint(self, hint: Hint) -> None:
        """Route a path to its job and schedule it, debounced."""
        with self._lock:  # atomic with ``bound``: a save in a folder being bound is never lost
            where = route(
                hint,
                self._root(),
                agents=self._selection.agent_folders,
                conversation_of=self._selection.folders.get,
                building=self._building.__contains__,
            )
            if where.orphan is not None:
                self._orphan_signals.add(where.orphan)
        debounce = self._debounce()
        for job in where.jobs:
            self._sched.schedule(job, debounce, debounce=True)
        if where.conversation is not None:
            flags = Flags(local=True, prompt_signal_ns=time.time_ns() if where.prompt_saved else 0)
            if where.inbox_name is not None:
                flags.inbox_hints.add(where.inbox_name)
            self._runtimes.get(where.conversation).add(flags)
            self._sched.schedule(ConversationJob(where.conversation), debounce, debounce=True)

    def building(self, key: tuple[str, str], on: bool) -> None:
        """The folder ``key`` is being built (its events are convsync's own), or no longer."""
        with self._lock:
            (self._building.add if on else self._building.discard)(key)

    def bound(self, cid: str, agent_folder: str, folder: str, *, new: bool, lane: Lane) -> None:
        """``cid`` is bound to the folder: index it and look at it (``new``: read it from the server too)."""
        rt = self._runtimes.get(cid)
        flags = Flags(local=True, poll=new)
        key = (agent_folder, folder)
        with self._lock:
            if key in self._orphan_signals:
                self._orphan_signals.discard(key)
                flags.prompt_signal_ns = time.time_ns()
            self._selection.folders[key] = cid
        rt.add(flags)
        self._sched.schedule(ConversationJob(cid), lane=lane)
