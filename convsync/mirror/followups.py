"""What follows a conversation's reconcile: its timers, a background look at its files, faster polls, a replan.

After a ``ConversationJob`` the engine hands the ``Outcome`` here: a conversation gone on the server asks for
its agent's pass and the lists; the server's failure or refusal becomes the server's problem; the runtime's
recheck and retry times become timers, kept messages get their "forget" timer, files and frames left by an
interactive or first-look job go to a background job (transcripts first), and a send or an active
conversation is polled at the fast rate. No I/O but reading the conversation's row; no threads.
"""

from __future__ import annotations

import time

from convsync.api.ratelimit import Lane
from convsync.mirror.conversation import PRE_SEND_FRESH_SECONDS, ConversationRuntime, Outcome
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.problems import Problems
from convsync.mirror.scheduler import LISTS, AgentJob, ConversationJob, Scheduler, Timer, TimerKind
from convsync.mirror.state import State

REPLAN_DELAY = 0.5  # seconds; a conversation gone on the server: the lists, shortly (others may follow)


class Followups:
    def __init__(
        self,
        *,
        state: State,
        sched: Scheduler,
        polls: PollPolicy,
        problems: Problems,
    ) -> None:
        self._state = state
        self._sched = sched
        self._polls = polls
        self._problems = problems

    def after(self, cid: str, outcome: Outcome | None, rt: ConversationRuntime | None, lane: Lane) -> None:
        """The reconcile of ``cid`` (run in ``lane``) ended with ``outcome`` (None: it did not run)."""
        if outcome is None:
            return
        if outcome.gone:
            row = self._state.conversation(cid)
            if row is not None:
                self._sched.schedule(AgentJob(row.agent_id))
            self._sched.schedule(LISTS, REPLAN_DELAY)
        self._problems.conversation_failed(outcome.transient, outcome.auth)
        with self._sched.changed:
            if rt is not None and rt.recheck_at is not None:
                self._sched.add_timer(Timer(rt.recheck_at, TimerKind.RECHECK, cid))
            if rt is not None and rt.retry_at:
                self._sched.add_timer(Timer(rt.retry_at, TimerKind.RETRY, cid))
            if rt is not None and rt.fetched[1]:
                self._sched.add_timer(Timer(rt.fetched[0] + PRE_SEND_FRESH_SECONDS, TimerKind.FORGET, cid))
            if rt is not None and rt.files_due and lane is not Lane.BACKGROUND:  # left to the background lane
                self._sched.due_at(ConversationJob(cid), time.monotonic(), Lane.BACKGROUND)
            if outcome.sent or (rt is not None and rt.active):
                self._polls.active_now(cid, time.monotonic())
            self._sched.changed.notify_all()
