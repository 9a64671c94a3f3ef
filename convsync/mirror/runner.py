"""One conversation's reconcile, set up: its row and agent looked up, its context built, ``Reconcile`` run.

A conversation detached, deleted, or whose agent is no longer mirrored is not reconciled and its polls stop.
The context carries what the reconcile works with: its folder, the client, the state, its ``Reporter``
(kept in the runtime across passes, so each problem is logged once), the server's clock and traits, a way to
ask for the lists again, and the ``on_reply`` hook. The caller holds the conversation's job key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial

from convsync import hooks
from convsync.api.client import AgentClient
from convsync.config import Config
from convsync.mirror.context import ConversationContext, Reporter, ServerClock, ServerTraits
from convsync.mirror.conversation import ConversationRuntime, Flags, Outcome, Reconcile
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.selection import Selection
from convsync.mirror.state import AgentRow, ConversationRow, State


class ConversationRunner:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        client: Callable[[], AgentClient],
        state: State,
        lock: AbstractContextManager[object],
        selection: Selection,
        runtimes: Runtimes,
        polls: PollPolicy,
        traits: ServerTraits,
        stopping: Callable[[], bool],
        replan: Callable[[], None],
    ) -> None:
        self._config = config
        self._client = client
        self._state = state
        self._lock = lock
        self._selection = selection
        self._runtimes = runtimes
        self._polls = polls
        self._stopping = stopping
        self._replan = replan
        self._clock = ServerClock()
        self._traits = traits

    def run(self, cid: str, flags: Flags) -> Outcome | None:
        """Reconcile ``cid`` for ``flags``; None when it is not mirrored (any more)."""
        row = self._state.conversation(cid)
        agents = self._selection.agents(self._config().agents)
        agent = next((a for a in agents if row and a.id == row.agent_id), None)
        if row is None or row.status != "active" or agent is None:
            with self._lock:
                self._polls.forget(cid)  # detached, deleted, or its agent no longer mirrored
            return None
        rt = self._runtimes.get(cid)  # its job's key (or ``run_once``, alone) keeps everyone else out
        return Reconcile(self._context(row, agent, rt), rt, flags).run()

    def _context(self, row: ConversationRow, agent: AgentRow, rt: ConversationRuntime) -> ConversationContext:
        config = self._config()
        folder = config.root / agent.folder / row.folder
        if rt.reporter is None or rt.reporter.folder != folder:
            rt.reporter = Reporter(self._state, row.id, folder, recorded=(row.activity, row.last_error))
        return ConversationContext(
            root=config.root,
            agent_id=agent.id,
            conversation_id=row.id,
            folder=folder,
            client=self._client(),
            state=self._state,
            report=rt.reporter,
            clock=self._clock,
            traits=self._traits,
            stopping=self._stopping,
            replan=self._replan,
            frame_formats=config.frame_formats,
            on_reply=partial(hooks.run_on_reply, config.on_reply, secret=config.api_key) if config.on_reply else None,
        )
