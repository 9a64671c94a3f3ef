"""Due timers → conversation jobs, without threads: lanes, superseded timers, dropped baselines."""

from __future__ import annotations

import random
from pathlib import Path

from convsync.api.models import Message
from convsync.api.ratelimit import Lane
from convsync.config import Config
from convsync.mirror.conversation import PRE_SEND_FRESH_SECONDS, ConversationRuntime
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.scheduler import ConversationJob, Timer, TimerKind
from convsync.mirror.timers import timer_jobs

MESSAGE = Message("m1", "user", ())
CONFIG = Config(url="http://127.0.0.1:1/api/v2", api_key="k", root=Path("/tmp/root"))


def jobs_for(
    timers: list[Timer], runtimes: dict[str, ConversationRuntime], *, now: float = 1000.0, busy: bool = False
) -> tuple[list[tuple[ConversationJob, Lane]], PollPolicy]:
    polls = PollPolicy(CONFIG, lambda _: None, random.Random(1))
    for timer in timers:
        if timer.kind is TimerKind.POLL:
            polls.at(timer.conversation_id, timer.at)
    return timer_jobs(timers, now, runtime=runtimes.get, polls=polls, busy=lambda _: busy), polls


def test_a_due_poll_is_a_background_job_that_reads_the_messages() -> None:
    """A poll long after the last read becomes the conversation's job in the background lane, asking to poll."""
    rt = ConversationRuntime("c")
    jobs, _ = jobs_for([Timer(900.0, TimerKind.POLL, "c")], {"c": rt})
    assert jobs == [(ConversationJob("c"), Lane.BACKGROUND)]
    assert rt.pop().poll


def test_a_recheck_is_an_interactive_look_at_the_folder() -> None:
    """A recheck at its conversation's recheck time becomes an interactive local look, and is cleared."""
    rt = ConversationRuntime("c")
    rt.recheck_at = 990.0
    jobs, _ = jobs_for([Timer(990.0, TimerKind.RECHECK, "c")], {"c": rt})
    assert jobs == [(ConversationJob("c"), Lane.INTERACTIVE)]
    assert rt.recheck_at is None and rt.pop().local


def test_a_superseded_retry_makes_no_job() -> None:
    """A retry timer whose time is no longer the conversation's retry time is skipped."""
    rt = ConversationRuntime("c")
    rt.retry_at = 995.0
    jobs, _ = jobs_for([Timer(990.0, TimerKind.RETRY, "c")], {"c": rt})
    assert jobs == [] and rt.retry_at == 995.0


def test_a_timer_of_a_conversation_without_a_runtime_is_dropped() -> None:
    """A timer of a conversation forgotten meanwhile makes no job."""
    jobs, _ = jobs_for([Timer(990.0, TimerKind.RECHECK, "gone")], {})
    assert jobs == []


def test_forget_drops_the_kept_messages_of_an_idle_conversation() -> None:
    """A "forget" timer at the kept read's expiry empties the kept messages and makes no job."""
    rt = ConversationRuntime("c")
    rt.fetched = (900.0, [MESSAGE])
    jobs, _ = jobs_for([Timer(900.0 + PRE_SEND_FRESH_SECONDS, TimerKind.FORGET, "c")], {"c": rt})
    assert jobs == [] and rt.fetched == (900.0, [])


def test_forget_leaves_the_messages_of_a_running_conversation() -> None:
    """While the conversation's job runs, its kept messages stay (the reconcile times a new "forget")."""
    rt = ConversationRuntime("c")
    kept = [MESSAGE]
    rt.fetched = (900.0, kept)
    jobs_for([Timer(900.0 + PRE_SEND_FRESH_SECONDS, TimerKind.FORGET, "c")], {"c": rt}, busy=True)
    assert rt.fetched[1] == kept
