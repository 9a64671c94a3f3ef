"""The ``AgentHost`` an agent pass is handed, made of the engine's parts (not of the engine).

An agent pass binds and builds folders (``FileEvents``), plans its agent again later and claims a
conversation's key before moving its folder aside (``Scheduler``), reports problems (``Problems``), and
leaves a freshly built folder's runtime knowing it is clean (``Runtimes``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convsync.api.ratelimit import Lane
from convsync.mirror.context import Reporter
from convsync.mirror.events import FileEvents
from convsync.mirror.problems import Problems
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.scheduler import AgentJob, ConversationJob, Scheduler
from convsync.mirror.state import State


class PartsHost:
    def __init__(
        self,
        *,
        state: State,
        sched: Scheduler,
        runtimes: Runtimes,
        events: FileEvents,
        problems: Problems,
        stopping: Callable[[], bool],
    ) -> None:
        self._state = state
        self._sched = sched
        self._runtimes = runtimes
        self._events = events
        self._problems = problems
        self._stopping = stopping

    def bound(self, cid: str, agent_folder: str, folder: str, *, new: bool, lane: Lane = Lane.INTERACTIVE) -> None:
        self._events.bound(cid, agent_folder, folder, new=new, lane=lane)

    def built(self, cid: str, path: Path) -> None:
        rt = self._runtimes.get(cid)  # its status file says "idle"; no temp files to clean up in it
        rt.temps_cleaned = True
        rt.reporter = Reporter(self._state, cid, path, recorded=("idle", None), status="idle")

    def building(self, key: tuple[str, str], on: bool) -> None:
        self._events.building(key, on)

    def later(self, agent_id: str, delay: float) -> None:
        self._sched.schedule(AgentJob(agent_id), delay)

    def claim(self, cid: str) -> bool:
        return self._sched.claim(ConversationJob(cid), wait=False, stopping=self._stopping)

    def release(self, cid: str) -> None:
        self._sched.done(ConversationJob(cid))

    def problem(self, source: str, text: str | None) -> None:
        self._problems.set(source, text)
