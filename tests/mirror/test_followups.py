"""What follows a reconcile, without threads: timers, files left to the background lane, fast polls, a replan."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.api.ratelimit import Lane
from convsync.config import Config
from convsync.mirror.conversation import ConversationRuntime, Outcome
from convsync.mirror.followups import Followups
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.problems import Problems
from convsync.mirror.scheduler import LISTS, AgentJob, ConversationJob, Job, Scheduler, Timer, TimerKind
from convsync.mirror.state import State

CONFIG = Config(url="http://127.0.0.1:1/api/v2", api_key="k", root=Path("/tmp/root"))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    s = State(tmp_path / "state.db")
    s.bind_agent("a1", "Sales", "Sales")
    s.bind_conversation("c1", "a1", "Q3 plan", "Q3 plan")
    yield s
    s.close()


def parts(state: State) -> tuple[Followups, Scheduler, PollPolicy]:
    sched = Scheduler()
    sched.idle = 2
    sched.open_background()
    polls = PollPolicy(CONFIG, sched.add_timer, random.Random(1))
    return Followups(state=state, sched=sched, polls=polls, problems=Problems()), sched, polls


def queued(sched: Scheduler, at: float) -> list[tuple[Job, Lane]]:
    sched.dispatch(at)
    out = []
    while (taken := sched.next_job()) is not None:
        out.append(taken)
    return out


def test_a_recheck_time_becomes_a_recheck_timer(state: State) -> None:
    """A reconcile that left a recheck time (a file settling) times a recheck at that time."""
    followups, sched, _ = parts(state)
    rt = ConversationRuntime("c1")
    rt.recheck_at = time.monotonic() + 2.0
    followups.after("c1", Outcome(), rt, Lane.INTERACTIVE)
    assert Timer(rt.recheck_at, TimerKind.RECHECK, "c1") in sched.due_timers(rt.recheck_at)


def test_files_left_by_an_interactive_job_go_to_the_background_lane(state: State) -> None:
    """Files and frames due after an interactive reconcile are a background job of the conversation."""
    followups, sched, _ = parts(state)
    rt = ConversationRuntime("c1")
    rt.files_due = True
    followups.after("c1", Outcome(), rt, Lane.INTERACTIVE)
    assert queued(sched, time.monotonic() + 1) == [(ConversationJob("c1"), Lane.BACKGROUND)]


def test_files_due_after_a_background_job_make_no_second_job(state: State) -> None:
    """A background reconcile that still has files due schedules nothing more (it was the background job)."""
    followups, sched, _ = parts(state)
    rt = ConversationRuntime("c1")
    rt.files_due = True
    followups.after("c1", Outcome(), rt, Lane.BACKGROUND)
    assert queued(sched, time.monotonic() + 1) == []


def test_a_send_polls_at_the_fast_rate(state: State) -> None:
    """After a prompt went out, the conversation's next poll is one active interval away."""
    followups, sched, polls = parts(state)
    before = time.monotonic()
    followups.after("c1", Outcome(sent=True), ConversationRuntime("c1"), Lane.INTERACTIVE)
    polls_due = [t for t in sched.due_timers(before + polls.intervals.active + 1) if t.kind is TimerKind.POLL]
    assert len(polls_due) == 1 and polls.current(polls_due[0])


def test_a_conversation_gone_on_the_server_replans_its_agent_and_the_lists(state: State) -> None:
    """A conversation gone asks for its agent's pass now and the lists shortly after."""
    followups, sched, _ = parts(state)
    followups.after("c1", Outcome(gone=True), ConversationRuntime("c1"), Lane.INTERACTIVE)
    jobs = [job for job, _ in queued(sched, time.monotonic() + 1)]
    assert jobs == [AgentJob("a1"), LISTS]
