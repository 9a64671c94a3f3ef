"""The poll policy without threads: intervals within the background share, skipped and re-timed polls."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convsync.api.models import Conversation
from convsync.api.ratelimit import Lane
from convsync.config import Config
from convsync.mirror.hints import ChangeHints
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.scheduler import Timer, TimerKind

CONFIG = Config(url="http://127.0.0.1:1/api/v2", api_key="k", root=Path("/tmp/root"))


def policy() -> tuple[PollPolicy, list[Timer]]:
    timers: list[Timer] = []
    return PollPolicy(CONFIG, timers.append, random.Random(1)), timers


def test_idle_polls_of_many_conversations_fit_the_background_share() -> None:
    """1,000 idle conversations are polled every ~668 s: 1.5 requests/s, half of the default 30 / 10 s."""
    polls, _ = policy()
    polls.update(CONFIG, n_active=0, n_idle=1000, n_agents=1)
    assert polls.intervals.idle == pytest.approx((1000 + 2) / 1.5)


def test_a_poll_right_after_a_read_moves_to_one_interval_after_it() -> None:
    """A poll due 1 s after a reply's read (interval 60 s) is skipped and timed 60 s after the read."""
    polls, timers = policy()
    polls.at("c", 100.0)
    assert not polls.fired(timers[-1], 100.0, active=False, read_at=99.0)
    assert timers[-1] == Timer(159.0, TimerKind.POLL, "c")


def test_a_due_poll_polls_and_times_the_next() -> None:
    """A poll long after the last read polls now and times the next one an interval later."""
    polls, timers = policy()
    polls.at("c", 100.0)
    assert polls.fired(timers[-1], 100.0, active=False, read_at=0.0)
    assert timers[-1] == Timer(160.0, TimerKind.POLL, "c")


def test_a_superseded_poll_does_nothing() -> None:
    """A timer that is no longer the conversation's next poll is ignored."""
    polls, timers = policy()
    polls.at("c", 100.0)
    stale = timers[-1]
    polls.active_now("c", 50.0)
    assert not polls.fired(stale, 100.0, active=True, read_at=0.0)
    assert not polls.current(stale)


def test_first_polls_are_spread_over_three_idle_intervals() -> None:
    """The first polls of 100 conversations after a start fall within three idle intervals, not at once."""
    polls, timers = policy()
    for i in range(100):
        polls.first(f"c{i}", 0.0)
    times = [t.at for t in timers]
    assert max(times) <= 180.0 and len({round(t) for t in times}) > 50


def _announcing() -> ChangeHints:
    hints = ChangeHints()
    hints.listed([Conversation("c", "c", "a", updated_at=datetime(2026, 12, 4, tzinfo=UTC))])
    return hints


def test_a_list_that_announces_changes_keeps_its_interval() -> None:
    """With a trusted ``updated_at`` in the list, 1,000 idle conversations leave the lists pass at 30 s."""
    timers: list[Timer] = []
    polls = PollPolicy(CONFIG, timers.append, random.Random(1), hints=_announcing())
    polls.update(CONFIG, n_active=0, n_idle=1000, n_agents=1)
    assert polls.lists_interval(CONFIG) == CONFIG.poll_conversations_seconds
    assert 1000 / polls.intervals.idle + 1 / polls.lists_interval(CONFIG) == pytest.approx(1.5)


def test_without_announcements_the_lists_pass_is_stretched_too() -> None:
    """Without ``updated_at`` in the list, the lists pass is stretched with the polls (as before hints)."""
    timers: list[Timer] = []
    polls = PollPolicy(CONFIG, timers.append, random.Random(1), hints=ChangeHints())
    polls.update(CONFIG, n_active=0, n_idle=1000, n_agents=1)
    assert polls.lists_interval(CONFIG) == pytest.approx(30 * (1000 + 2) / 90)


def test_a_list_that_announces_changes_is_read_in_the_first_look_lane() -> None:
    """The lists pass of an announcing server does not wait behind background jobs; otherwise it is background."""
    timers: list[Timer] = []
    announcing = PollPolicy(CONFIG, timers.append, hints=_announcing())
    silent = PollPolicy(CONFIG, timers.append, hints=ChangeHints())
    assert (announcing.lists_lane(), silent.lists_lane()) == (Lane.FIRST_LOOK, Lane.BACKGROUND)
