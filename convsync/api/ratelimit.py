"""The client-side request budget: at most N requests in any window of W seconds, shared by all threads, in lanes.

One budget serves everything a client sends, but not first come, first served: a person waiting on a prompt
must not queue behind a thousand polls. Each request belongs to a lane (``Lane``), set by the caller with
``request_lane`` (a context variable, so the engine sets it per job and the client's methods need no argument):

- ``INTERACTIVE`` (the default: a command, a prompt send and its stream, an upload just dropped, the read that
  completes a reply) reserves the next free slot at once and may use the whole window;
- ``FIRST_LOOK`` (a conversation never mirrored) and ``BACKGROUND`` (polls, files/frames re-checks) take a slot
  only when it is free *now* and no caller of a higher lane waits, so they never hold a future slot an
  interactive request could have had; they leave free ``INTERACTIVE_RESERVE`` slots of the window plus as many
  as interactive requests used in the last window (a person sending prompts keeps room to send more);
- ``BACKGROUND`` in addition never holds more than ``background_share`` of the window.

A 429 pauses every lane (``pause``). ``Budget`` is the arithmetic, without threads or clocks, so it is unit
tested directly; ``SlidingWindowLimiter`` adds the lock, the waiting and the lane queues. ``clock`` and
``sleep`` are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

INTERACTIVE_RESERVE = 2  # a prompt's pre-send read and its POST: kept free of first looks and polls
DEFAULT_BACKGROUND_SHARE = 0.5
WAIT_STEP = 0.1  # a waiting caller looks again at least this often (its lane may have been raised meanwhile)


class Lane(enum.IntEnum):
    """Who a request is for, most urgent first."""

    INTERACTIVE = 0
    FIRST_LOOK = 1
    BACKGROUND = 2


_lane: ContextVar[Lane | Callable[[], Lane]] = ContextVar("convsync_request_lane", default=Lane.INTERACTIVE)


@contextmanager
def request_lane(lane: Lane | Callable[[], Lane]) -> Iterator[None]:
    """Requests made in this block (in this thread) belong to ``lane``; a callable is asked again while a
    request waits (a job's lane is raised when a person starts waiting for it)."""
    token = _lane.set(lane)
    try:
        yield
    finally:
        _lane.reset(token)


def current_lane() -> Lane:
    lane = _lane.get()
    return lane if isinstance(lane, Lane) else lane()


class Budget:
    """The window's arithmetic: when a request of a lane may start, given the starts granted so far.

    Not thread-safe: ``SlidingWindowLimiter`` calls it under its lock."""

    def __init__(self, requests: int, per_seconds: float, background_share: float = DEFAULT_BACKGROUND_SHARE) -> None:
        if requests < 1:
            raise ValueError("a rate limit needs at least one request per window")
        if per_seconds <= 0:
            raise ValueError("a rate limit window must be longer than zero seconds")
        if not 0 < background_share <= 1:
            raise ValueError("the background share must lie in (0, 1]")
        self.requests = requests
        self.per_seconds = per_seconds
        # With a tiny limit the reserve would leave nothing to the other lanes: it shrinks with the limit.
        self.reserve = min(INTERACTIVE_RESERVE, requests // 4)
        self.background_cap = max(1, min(requests - self.reserve, int(requests * background_share)))
        # The start times of the last grants (some may lie in the future: interactive reservations).
        self._starts: deque[float] = deque(maxlen=requests)
        self._background: deque[float] = deque(maxlen=self.background_cap)
        self._interactive: deque[float] = deque(maxlen=requests)
        self.not_before = 0.0

    def earliest(self, lane: Lane, now: float) -> float:
        """The earliest time from ``now`` on at which a request of ``lane`` may start."""
        at = max(now, self.not_before)
        if lane is Lane.INTERACTIVE:
            if len(self._starts) == self.requests:
                at = max(at, self._starts[0] + self.per_seconds)
            return at
        since = now - self.per_seconds
        window = [t for t in self._starts if t > since]
        busy = sum(1 for t in self._interactive if t > since)
        if len(window) >= self.requests - self.reserve - busy:
            at = max(at, window[0] + self.per_seconds)  # look again once the oldest start leaves the window
        if lane is Lane.BACKGROUND and len(self._background) == self.background_cap:
            at = max(at, self._background[0] + self.per_seconds)
        return at

    def grant(self, lane: Lane, at: float) -> None:
        """Record a start at ``at`` (the caller checked ``earliest``)."""
        self._starts.append(at)
        if lane is Lane.BACKGROUND:
            self._background.append(at)
        elif lane is Lane.INTERACTIVE:
            self._interactive.append(at)

    def pause_until(self, at: float) -> None:
        self.not_before = max(self.not_before, at)


class SlidingWindowLimiter:
    """Grants at most ``requests`` starts in any ``per_seconds`` window, interactive requests first."""

    def __init__(
        self,
        requests: int,
        per_seconds: float,
        *,
        background_share: float = DEFAULT_BACKGROUND_SHARE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._budget = Budget(requests, per_seconds, background_share)
        self.requests = requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition(threading.Lock())
        self._waiting: dict[Lane, deque[object]] = {lane: deque() for lane in Lane}

    @property
    def background_cap(self) -> int:
        """How many background requests may start in one window."""
        return self._budget.background_cap

    def reserve(self) -> float:
        """Reserve the next interactive start and return how many seconds the caller must wait before it."""
        with self._cond:
            now = self._clock()
            start = self._budget.earliest(Lane.INTERACTIVE, now)
            self._budget.grant(Lane.INTERACTIVE, start)
            return start - now

    def acquire(self, lane: Lane | None = None) -> float:
        """Block until a request of ``lane`` (default: the caller's ``request_lane``) may start; return the
        seconds waited."""
        fixed = lane
        lane = current_lane() if fixed is None else fixed
        waited = 0.0
        if lane is not Lane.INTERACTIVE:
            start = lane
            waited, lane = self._acquire_when_free(start, current_lane if fixed is None else (lambda: start))
            if lane is not Lane.INTERACTIVE:
                return waited
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return waited + wait

    def _acquire_when_free(self, lane: Lane, lane_now: Callable[[], Lane]) -> tuple[float, Lane]:
        """Wait for a free slot in ``lane``; returns (seconds waited, lane), or as soon as ``lane_now`` says
        the request became interactive (it then reserves its slot like any interactive request)."""
        ticket = object()
        with self._cond:
            began = now = self._clock()
            self._waiting[lane].append(ticket)
            try:
                while True:
                    raised = lane_now()
                    if raised < lane:
                        self._waiting[lane].remove(ticket)
                        lane = raised
                        if lane is Lane.INTERACTIVE:
                            return now - began, lane
                        self._waiting[lane].append(ticket)
                    queue = self._waiting[lane]
                    first = queue[0] is ticket and not any(self._waiting[h] for h in Lane if h < lane)
                    if first:
                        at = self._budget.earliest(lane, now)
                        if at <= now:
                            self._budget.grant(lane, now)
                            return now - began, lane
                        self._cond.wait(min(at - now, WAIT_STEP))
                    else:
                        self._cond.wait(WAIT_STEP)
                    now = self._clock()
            finally:
                if ticket in self._waiting[lane]:
                    self._waiting[lane].remove(ticket)
                self._cond.notify_all()  # the next of this lane, or a lower lane, may go now

    def pause(self, seconds: float) -> None:
        """Start nothing for ``seconds`` from now (the server said 429 with ``Retry-After``)."""
        with self._cond:
            self._budget.pause_until(self._clock() + max(0.0, seconds))
