"""Due timers → the conversation jobs they call for, in their lanes.

A poll asks for the messages (background lane), unless the poll policy says it is superseded or would learn
nothing; a recheck (a file or a prompt settling) and a retry of queued work look at the folder (interactive);
a "forget" drops the messages a conversation kept as a send's baseline and makes no job. A timer whose time
is no longer its conversation's (a newer recheck or retry was timed) is skipped. Called by the scheduler
thread under the engine's lock; no I/O, no threads: unit-tested with a ``PollPolicy`` and plain runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from convsync.api.ratelimit import Lane
from convsync.mirror.conversation import PRE_SEND_FRESH_SECONDS, ConversationRuntime, Flags
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.scheduler import ConversationJob, Timer, TimerKind


def timer_jobs(
    timers: Iterable[Timer],
    now: float,
    *,
    runtime: Callable[[str], ConversationRuntime | None],
    polls: PollPolicy,
    busy: Callable[[ConversationJob], bool],
) -> list[tuple[ConversationJob, Lane]]:
    """The jobs ``timers`` (due by ``now``) call for; adds to each runtime's flags what its job is for."""
    jobs: list[tuple[ConversationJob, Lane]] = []
    for timer in timers:
        at, kind, cid = timer.at, timer.kind, timer.conversation_id
        rt = runtime(cid)
        if rt is None:
            continue
        lane = Lane.INTERACTIVE  # a prompt or a file settling, a retry of queued work
        if kind is TimerKind.POLL:
            lane = Lane.BACKGROUND
            if not polls.fired(timer, now, active=rt.active, read_at=rt.fetched[0]):
                continue
            rt.add(Flags(poll=True))
        elif kind is TimerKind.RECHECK:
            if rt.recheck_at != at:
                continue
            rt.recheck_at = None
            rt.add(Flags(local=True))
        elif kind is TimerKind.RETRY:
            if rt.retry_at != at:
                continue
            rt.retry_at = 0.0
            rt.add(Flags(local=True))
        elif kind is TimerKind.FORGET:
            # Messages read are kept only while they may serve as a send's baseline: a thousand idle
            # conversations' messages would otherwise stay in memory (and in every GC pass) for good.
            if not busy(ConversationJob(cid)):  # else a reconcile runs: it will time a new "forget"
                read_at, messages = rt.fetched
                if messages and read_at + PRE_SEND_FRESH_SECONDS == at:
                    rt.fetched = (read_at, [])
            continue
        jobs.append((ConversationJob(cid), lane))
    return jobs
