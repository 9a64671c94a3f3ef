"""The poll policy: when each conversation's messages are asked for, within the background share of the budget.

The server's list tells about creates, deletes and renames only (the public Conversation object has no
``updated_at``), so a message added elsewhere shows only when its conversation is polled. Conversations
active in the last minutes are polled at ``poll.active_seconds``, the others at ``poll.idle_seconds``, both
stretched by one factor (``plan.poll_intervals``) until polling fits the background share of the request
budget: with N idle conversations the worst-case delay of a remote change is about (N + 2) / 1.5 s with the
default config (``docs/performance.md``). A poll right after a read (a reply ended) would learn nothing and
moves to one interval after that read; first polls after a start are spread over three intervals.

A server whose list announces changes (``convsync.mirror.hints``: ``updated_at`` in the list, trusted)
makes the list the way to find them: the lists pass then keeps its configured interval, unstretched, and
runs in the first-look lane (one request per agent and interval, which must not wait behind a backlog of
background jobs such as a first mirror's files listings); the polls fit what is left of the background share.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from convsync.api.ratelimit import Lane
from convsync.config import Config
from convsync.mirror.hints import ChangeHints
from convsync.mirror.plan import PollIntervals, poll_intervals
from convsync.mirror.scheduler import Timer, TimerKind

FIRST_POLL_REQUESTS = 3  # messages, files, frames
REQUESTS_PER_POLL = 1  # a poll reads the messages; files and frames are listed only after the agent ran


class PollPolicy:
    """Next poll time per conversation; stale timers (superseded times) are ignored when they fire."""

    def __init__(
        self,
        config: Config,
        add_timer: Callable[[Timer], None],
        rng: random.Random | None = None,
        *,
        hints: ChangeHints | None = None,
    ) -> None:
        self.intervals = PollIntervals(config.poll_active_seconds, config.poll_idle_seconds, 0)
        self._add_timer = add_timer
        self._hints = hints
        self._rng = rng or random.Random()  # noqa: S311 (spreading polls, not secrets)
        self._next: dict[str, float] = {}

    def update(self, config: Config, *, n_active: int, n_idle: int, n_agents: int) -> None:
        """Stretch the configured intervals to fit the background share for this many conversations."""
        budget = config.rate_limit_background_share * config.rate_limit_requests / config.rate_limit_window_seconds
        lists = config.poll_conversations_seconds
        announcing = self._hints is not None and self._hints.announcing
        intervals = poll_intervals(
            n_active=n_active,
            n_idle=n_idle,
            n_agents=0 if announcing else n_agents,
            active_seconds=config.poll_active_seconds,
            idle_seconds=config.poll_idle_seconds,
            lists_seconds=lists,
            # The lists the announcing server needs come first; the polls share the rest (a tenth at least).
            budget_per_second=max(budget - n_agents / lists, budget / 10) if announcing else budget,
            requests_per_poll=REQUESTS_PER_POLL,
        )
        if announcing:
            intervals = PollIntervals(intervals.active, intervals.idle, lists)
        self.intervals = intervals

    def lists_lane(self) -> Lane:
        """The lane of the periodic lists pass: first look while it is how changes are found, else background."""
        return Lane.FIRST_LOOK if self._hints is not None and self._hints.announcing else Lane.BACKGROUND

    def lists_interval(self, config: Config) -> float:
        return max(self.intervals.lists, config.poll_conversations_seconds)

    def at(self, cid: str, when: float) -> None:
        """Poll ``cid`` at ``when``; an earlier time for it becomes stale."""
        self._next[cid] = when
        self._add_timer(Timer(when, TimerKind.POLL, cid))

    def first(self, cid: str, now: float) -> None:
        """A conversation seen for the first time: its first poll somewhere in the next three idle intervals
        (a restart must not burst the server; a first poll also lists files and frames)."""
        if cid not in self._next:
            self.at(cid, now + self._rng.uniform(0, max(1.0, FIRST_POLL_REQUESTS * self.intervals.idle)))

    def forget(self, cid: str) -> None:
        self._next.pop(cid, None)

    def fired(self, timer: Timer, now: float, *, active: bool, read_at: float) -> bool:
        """A poll timer came due: whether to poll now (the next one is timed either way)."""
        if self._next.get(timer.conversation_id) != timer.at:
            return False  # superseded
        interval = self.intervals.active if active else self.intervals.idle
        if now - read_at < interval / 2:  # just read (a reply ended): this poll would learn nothing
            self.at(timer.conversation_id, read_at + interval)
            return False
        self.at(timer.conversation_id, now + interval)
        return True

    def active_now(self, cid: str, now: float) -> None:
        """Something went out, or the conversation is active: poll at the fast rate from now on."""
        soon = now + self.intervals.active
        if self._next.get(cid, soon + 1) > soon:
            self.at(cid, soon)

    def respread(self, now: float, window_of: Callable[[str], str]) -> None:
        """Re-time every poll for the current intervals (after a reload): each within its new interval.
        ``window_of`` says which: "active", "first" (never read) or "idle"."""
        windows = {
            "active": self.intervals.active,
            "first": FIRST_POLL_REQUESTS * self.intervals.idle,
            "idle": self.intervals.idle,
        }
        for cid in list(self._next):
            self.at(cid, now + self._rng.uniform(0, windows[window_of(cid)]))

    def current(self, timer: Timer) -> bool:
        """Whether a poll timer is still the conversation's next poll (else it may be dropped)."""
        return self._next.get(timer.conversation_id) == timer.at
