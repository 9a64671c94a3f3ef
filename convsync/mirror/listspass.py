"""The passes over every agent: against the server's lists, against the disk only, and the first look.

The *lists pass* resolves the configured agents and plans each against its conversation list (the server
lists them newest first), and reads at once, in the first-look lane, each conversation a list's change hint
says changed (``hints``); the *local pass* plans every agent against the disk only (the rescan, and the
fallback when the server fails) and schedules each conversation folder that changed since its last look;
the *first look*, once after the first lists pass, schedules every conversation (queued work in the
interactive lane, the rest in the background) before the background lane opens. Each agent is planned
under its ``AgentJob`` key, claimed from the scheduler, so no other pass plans it meanwhile; no lock is held
across a request. The engine hands in the parts it needs; none of them is the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from convsync.api.client import AgentClient
from convsync.api.models import Conversation
from convsync.api.ratelimit import Lane
from convsync.config import Config
from convsync.errors import ApiError
from convsync.mirror.agentpass import AgentPass
from convsync.mirror.conversation import Flags
from convsync.mirror.folders import folder_fingerprint
from convsync.mirror.hints import ChangeHints
from convsync.mirror.problems import Problems
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.scheduler import AgentJob, ConversationJob, Scheduler
from convsync.mirror.selection import Selection
from convsync.mirror.state import AgentRow, State


class ListsPass:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        client: Callable[[], AgentClient],
        state: State,
        sched: Scheduler,
        lock: AbstractContextManager[object],
        agents: AgentPass,
        selection: Selection,
        runtimes: Runtimes,
        problems: Problems,
        hints: ChangeHints,
        stopping: Callable[[], bool],
        answered: Callable[[], None],
    ) -> None:
        self._config = config
        self._client = client
        self._state = state
        self._sched = sched
        self._lock = lock
        self._agents = agents
        self._selection = selection
        self._runtimes = runtimes
        self._problems = problems
        self._hints = hints
        self._stopping = stopping
        self._answered = answered  # after a pass the server answered
        # Lists passes started and finished, and the last one's server error: what ``wait`` waits for.
        self.started = 0
        self._done = 0
        self._error: ApiError | None = None

    def run(self) -> ApiError | None:
        """Resolve agents and plan each against its conversation list; returns the server's error, if any."""
        with self._sched.changed:
            self.started += 1
            number = self.started
        error = self._run()
        if error is None:
            self._answered()
        with self._sched.changed:
            self._done, self._error = number, error
            self._sched.changed.notify_all()
        return error

    def wait(self, number: int, timeout: float | None) -> ApiError | None:
        """Wait until lists pass ``number`` finished (or stopping); its server error. ``TimeoutError`` if late."""
        with self._sched.changed:
            if not self._sched.changed.wait_for(lambda: self._done >= number or self._stopping(), timeout):
                raise TimeoutError("the pass did not finish in time")
            return self._error

    def _run(self) -> ApiError | None:
        config = self._config()
        try:
            agents = self._agents.resolve(config.agents, config.root)
            self._selection.rebuild(config.agents, config.root)
            for agent in agents:
                # The agent's key is held from the listing on: it must not be older than the bindings it is
                # planned with (a folder made meanwhile, created on the server, would read as deleted there).
                key = AgentJob(agent.id)
                if not self._sched.claim(key, wait=True, stopping=self._stopping):
                    break  # stopping
                try:
                    remote = self._client().list_conversations(agent.id)
                    for cid in self._hints.listed(remote):  # its list says it changed: read it now
                        self._runtimes.get(cid).add(Flags(poll=True))
                        self._sched.schedule(ConversationJob(cid), lane=Lane.FIRST_LOOK)
                    self._state.refresh_names(agent.id, {c.id: c.name for c in remote})  # for convsync status
                    self.plan(agent, remote)
                finally:
                    self._sched.done(key)
        except ApiError as exc:
            self._problems.lists_failed(exc)
            return exc
        if self._problems.lists_answered():
            self._wake_pending()
        return None

    def plan(self, agent: AgentRow, remote: list[Conversation] | None) -> None:
        """Plan one agent (its key held) against ``remote``, or against the disk only when None."""
        config = self._config()
        if self._agents.run(agent, remote, root=config.root, policy=config.on_local_delete):
            self._selection.rebuild(config.agents, config.root)

    def local(self, *, schedule: bool = False) -> None:
        """Plan every agent against the disk only; with ``schedule``, look at every changed conversation folder."""
        config = self._config()
        for agent in self._selection.agents(config.agents):
            if (config.root / agent.folder).is_dir() or agent.id in self._agents.vanished:
                key = AgentJob(agent.id)
                if not self._sched.claim(key, wait=True, stopping=self._stopping):
                    return  # stopping
                try:
                    self.plan(agent, None)
                finally:
                    self._sched.done(key)
        if schedule:
            folders = {a.id: a.folder for a in self._selection.agents(config.agents)}
            pending = set(self._state.conversations_with_pending())
            for row in self._selection.conversations(config.agents):
                rt = self._runtimes.get(row.id)
                # Only folders that changed since the last look (or with queued work) need one.
                if row.id in pending:
                    rt.add(Flags(local=True))
                    self._sched.schedule(ConversationJob(row.id))
                elif rt.seen != folder_fingerprint(config.root / folders[row.agent_id] / row.folder):
                    rt.add(Flags(local=True))  # a send it finds goes out in the interactive lane all the same
                    self._sched.schedule(ConversationJob(row.id), lane=Lane.BACKGROUND)

    def first_look(self, ready: Callable[[], None]) -> None:
        """After the first lists pass: every conversation is looked at, queued work first; then ``ready`` (under
        the lock, so nothing scheduled before it is missed) and the background lane opens."""
        now = time.monotonic()
        pending = set(self._state.conversations_with_pending())
        with self._lock:
            for row in self._selection.conversations(self._config().agents):
                rt = self._runtimes.get(row.id)
                rt.add(Flags(local=True))
                self._sched.due_at(
                    ConversationJob(row.id), now, Lane.INTERACTIVE if row.id in pending else Lane.BACKGROUND
                )
                if row.id in pending:
                    rt.touch()
            ready()
        self._sched.open_background()

    def _wake_pending(self) -> None:
        """The server answers again: queued work goes out now, its backoff forgotten."""
        now = time.monotonic()
        with self._lock:
            for cid in self._state.conversations_with_pending():
                rt = self._runtimes.get(cid)
                rt.retry_at = 0.0
                rt.backoff.succeeded()
                rt.add(Flags(local=True))
                self._sched.due_at(ConversationJob(cid), now, Lane.INTERACTIVE)
