"""The in-memory runtimes of the conversations (``ConversationRuntime``), one per conversation id.

A runtime is made the first time anyone asks for its conversation, and its first poll is timed then
(``first_poll``). The map is read by the scheduler thread and written by workers and the watcher, under the
lock it is handed (the engine's); a runtime's own fields belong to whoever holds its conversation's job key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from convsync.mirror.conversation import ConversationRuntime


class Runtimes:
    def __init__(self, lock: AbstractContextManager[object], first_poll: Callable[[str, float], None]) -> None:
        self._lock = lock
        self._first_poll = first_poll
        self._by_id: dict[str, ConversationRuntime] = {}

    def get(self, cid: str) -> ConversationRuntime:
        """The runtime of ``cid``, made (and its first poll timed) if there is none yet."""
        with self._lock:
            rt = self._by_id.get(cid)
            if rt is None:
                rt = self._by_id[cid] = ConversationRuntime(cid)
            self._first_poll(cid, time.monotonic())
            return rt

    def peek(self, cid: str) -> ConversationRuntime | None:
        """The runtime of ``cid`` if there is one (nothing is made)."""
        return self._by_id.get(cid)

    def all(self) -> list[ConversationRuntime]:
        with self._lock:
            return list(self._by_id.values())

    def poll_window(self, cid: str) -> str:
        """Which poll interval ``cid`` is in (``PollPolicy.respread``): "active", "first" (never read) or "idle"."""
        rt = self._by_id.get(cid)
        if rt is not None and rt.active:
            return "active"
        return "first" if rt is None or rt.fetched[0] == float("-inf") else "idle"

    def count_active(self, cids: list[str]) -> int:
        """How many of ``cids`` are active (polled at the fast rate)."""
        return sum(1 for cid in cids if (rt := self._by_id.get(cid)) is not None and rt.active)

    def forget_seen(self) -> None:
        """Every folder is to be looked at again, changed or not (what the watcher could not see)."""
        with self._lock:
            for rt in self._by_id.values():
                rt.seen = None
