"""The engine's scheduler without threads: lanes, debounce, the one-job-per-key rule, timers."""

from __future__ import annotations

from convsync.api.ratelimit import Lane
from convsync.mirror.scheduler import (
    LISTS,
    RESCAN,
    AgentJob,
    ConversationJob,
    Scheduler,
    Timer,
    TimerKind,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(idle_workers: int = 2) -> tuple[Scheduler, Clock]:
    clock = Clock()
    sched = Scheduler(clock=clock)
    sched.idle = idle_workers
    sched.open_background()
    return sched, clock


def test_jobs_are_values() -> None:
    """Two jobs for the same conversation are the same key; a typo'd kind cannot exist."""
    assert ConversationJob("c1") == ConversationJob("c1")
    assert ConversationJob("c1") != AgentJob("c1")


def test_interactive_jobs_go_before_first_looks_and_background_ones() -> None:
    """Queued in the order background, first look, interactive, they are taken the other way round."""
    sched, clock = scheduler()
    sched.schedule(RESCAN, lane=Lane.BACKGROUND)
    sched.schedule(ConversationJob("new"), lane=Lane.FIRST_LOOK)
    sched.schedule(ConversationJob("saved"))
    sched.dispatch(clock.now)
    taken = [sched.next_job() for _ in range(3)]
    assert [t[0] for t in taken if t] == [ConversationJob("saved"), ConversationJob("new"), RESCAN]


def test_the_last_idle_worker_takes_interactive_jobs_only() -> None:
    """With one idle worker, a background job stays queued; an interactive one is taken."""
    sched, clock = scheduler(idle_workers=1)
    sched.schedule(ConversationJob("poll"), lane=Lane.BACKGROUND)
    sched.dispatch(clock.now)
    assert sched.next_job() is None
    sched.schedule(ConversationJob("prompt"))
    sched.dispatch(clock.now)
    assert sched.next_job() == (ConversationJob("prompt"), Lane.INTERACTIVE)


def test_background_waits_until_opened() -> None:
    """Before the first lists pass is over, background jobs are not taken."""
    clock = Clock()
    sched = Scheduler(clock=clock)
    sched.idle = 3
    sched.schedule(LISTS, lane=Lane.BACKGROUND)
    sched.dispatch(clock.now)
    assert sched.next_job() is None
    sched.open_background()
    assert sched.next_job() == (LISTS, Lane.BACKGROUND)


def test_a_more_urgent_reason_moves_a_queued_job_up() -> None:
    """A poll queued in the background lane becomes interactive when a save comes for the same conversation."""
    sched, clock = scheduler()
    sched.schedule(ConversationJob("c"), lane=Lane.BACKGROUND)
    sched.schedule(AgentJob("a"), lane=Lane.FIRST_LOOK)
    sched.dispatch(clock.now)
    sched.schedule(ConversationJob("c"))
    sched.dispatch(clock.now)
    assert sched.next_job() == (ConversationJob("c"), Lane.INTERACTIVE)


def test_a_busy_job_is_not_queued_twice() -> None:
    """A job due again while it runs is queued once it is done, never run twice at once."""
    sched, clock = scheduler()
    sched.schedule(ConversationJob("c"))
    sched.dispatch(clock.now)
    assert sched.next_job() == (ConversationJob("c"), Lane.INTERACTIVE)
    sched.schedule(ConversationJob("c"))
    sched.dispatch(clock.now)
    assert sched.next_job() is None
    sched.done(ConversationJob("c"))
    sched.dispatch(clock.now)
    assert sched.next_job() == (ConversationJob("c"), Lane.INTERACTIVE)


def test_a_claimed_key_keeps_its_job_out() -> None:
    """Work outside a job claims its key: the job is not taken until the claim ends."""
    sched, clock = scheduler()
    assert sched.claim(AgentJob("a"), wait=False)
    assert not sched.claim(AgentJob("a"), wait=False)
    sched.schedule(AgentJob("a"))
    sched.dispatch(clock.now)
    assert sched.next_job() is None
    sched.done(AgentJob("a"))
    sched.dispatch(clock.now)
    assert sched.next_job() == (AgentJob("a"), Lane.INTERACTIVE)


def test_debounce_moves_the_job_back_up_to_its_cap() -> None:
    """Each hint moves a debounced job back by the debounce, but never past 5 debounce periods after the first."""
    sched, clock = scheduler()
    job = ConversationJob("c")
    sched.schedule(job, 0.1, debounce=True)
    clock.now += 0.09
    sched.schedule(job, 0.1, debounce=True)
    assert sched.dispatch(clock.now) == clock.now + 0.1  # moved back
    for _ in range(10):
        clock.now += 0.09
        sched.schedule(job, 0.1, debounce=True)
    sched.dispatch(100.5)
    assert sched.next_job() == (job, Lane.INTERACTIVE)


def test_timers_come_due_in_order() -> None:
    """Timers are handed over when due, earliest first, and only then."""
    sched, _ = scheduler()
    sched.add_timer(Timer(105.0, TimerKind.RETRY, "b"))
    sched.add_timer(Timer(102.0, TimerKind.POLL, "a"))
    assert sched.due_timers(101.0) == []
    assert [t.conversation_id for t in sched.due_timers(110.0)] == ["a", "b"]


def test_a_running_jobs_lane_is_raised_by_a_more_urgent_reason() -> None:
    """A save for a conversation whose poll runs makes that poll's remaining requests interactive."""
    sched, clock = scheduler()
    job = ConversationJob("c")
    sched.schedule(job, lane=Lane.BACKGROUND)
    sched.dispatch(clock.now)
    assert sched.next_job() == (job, Lane.BACKGROUND)
    assert sched.lane_of(job) is Lane.BACKGROUND
    sched.schedule(job, 0.1, debounce=True)
    assert sched.lane_of(job) is Lane.INTERACTIVE
