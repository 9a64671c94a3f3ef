"""The client-side rate limiter on a fake clock: a sliding window that makes callers wait, never fail."""

from __future__ import annotations

import threading

import pytest

from convsync.api.ratelimit import (
    INTERACTIVE_RESERVE,
    Budget,
    Lane,
    SlidingWindowLimiter,
    current_lane,
    request_lane,
)
from tests.waiting import wait_until


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)


def test_requests_within_the_limit_do_not_wait() -> None:
    """The first N requests of a window start at once."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0, 0, 0]
    assert clock.slept == []


def test_request_over_the_limit_waits_for_the_window_to_slide() -> None:
    """The N+1st request waits until the first one leaves the window."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
    clock.now += 4.0
    assert limiter.acquire() == pytest.approx(6.0)


def test_queued_requests_get_successive_slots() -> None:
    """Callers over the limit are spread one window apart per slot, never more than N per window."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
    waits = [limiter.reserve() for _ in range(6)]
    assert waits == [0, 0, 10, 10, 20, 20]


def test_default_of_the_client_stays_under_the_gateway_limit() -> None:
    """At most 30 of 100 back-to-back reservations fall within any 10 s window (gateway allows 50)."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(30, 10.0, clock=clock, sleep=clock.sleep)
    starts = [clock.now + limiter.reserve() for _ in range(100)]
    assert max(sum(1 for s in starts if t <= s < t + 10.0) for t in starts) == 30


def test_pause_delays_everyone() -> None:
    """After pause(s), the next request waits s seconds even though the window has room."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(30, 10.0, clock=clock, sleep=clock.sleep)
    limiter.pause(5.0)
    assert limiter.acquire() == pytest.approx(5.0)


def test_threads_share_one_window() -> None:
    """Reservations from many threads together never exceed N per window."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(5, 10.0, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            wait = limiter.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [0.0] * 5 + [10.0] * 5 + [20.0] * 5 + [30.0] * 5


def test_invalid_limits_are_refused() -> None:
    """A limit of zero requests or a non-positive window is a programming error."""
    with pytest.raises(ValueError):
        SlidingWindowLimiter(0, 10.0)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(1, 0.0)


# --- lanes: the arithmetic (Budget), without threads ---------------------------------------------------------


def test_background_takes_at_most_its_share_of_the_window() -> None:
    """With the default share, the 16th background request of a 30/10 s window waits for the window to slide."""
    budget = Budget(30, 10.0)
    for _ in range(15):
        assert budget.earliest(Lane.BACKGROUND, 0.0) == 0.0
        budget.grant(Lane.BACKGROUND, 0.0)
    assert budget.earliest(Lane.BACKGROUND, 1.0) == pytest.approx(10.0)


def test_interactive_finds_room_when_background_used_its_share() -> None:
    """Background at its cap leaves the rest of the window to interactive requests, which start at once."""
    budget = Budget(30, 10.0)
    for _ in range(15):
        budget.grant(Lane.BACKGROUND, 0.0)
    assert budget.earliest(Lane.INTERACTIVE, 1.0) == 1.0


def test_first_looks_leave_the_interactive_reserve_free() -> None:
    """First looks may fill the window except INTERACTIVE_RESERVE slots, which stay free for a person."""
    budget = Budget(30, 10.0)
    for _ in range(30 - INTERACTIVE_RESERVE):
        assert budget.earliest(Lane.FIRST_LOOK, 0.0) == 0.0
        budget.grant(Lane.FIRST_LOOK, 0.0)
    assert budget.earliest(Lane.FIRST_LOOK, 5.0) == pytest.approx(10.0)
    assert budget.earliest(Lane.INTERACTIVE, 5.0) == 5.0


def test_first_looks_leave_interactive_requests_room_for_as_many_again() -> None:
    """After 10 interactive requests, first looks stop 12 slots short of the window: the reserve plus 10."""
    budget = Budget(30, 10.0)
    for _ in range(10):
        budget.grant(Lane.INTERACTIVE, 0.0)
    for _ in range(30 - INTERACTIVE_RESERVE - 20):
        assert budget.earliest(Lane.FIRST_LOOK, 1.0) == 1.0
        budget.grant(Lane.FIRST_LOOK, 1.0)
    assert budget.earliest(Lane.FIRST_LOOK, 1.0) == pytest.approx(10.0)
    assert budget.earliest(Lane.INTERACTIVE, 1.0) == 1.0


def test_the_background_share_is_configurable() -> None:
    """A share of 0.2 lets 6 background requests of 30 start in one window."""
    budget = Budget(30, 10.0, background_share=0.2)
    assert budget.background_cap == 6


def test_a_tiny_limit_keeps_no_reserve() -> None:
    """With 3 requests a window, first looks may use all three (a reserve would starve them)."""
    budget = Budget(3, 10.0)
    for _ in range(3):
        budget.grant(Lane.FIRST_LOOK, 0.0)
    assert budget.reserve == 0
    assert budget.earliest(Lane.FIRST_LOOK, 0.0) == pytest.approx(10.0)


def test_a_pause_holds_every_lane() -> None:
    """After a 429's pause, no lane starts before it ends."""
    budget = Budget(30, 10.0)
    budget.pause_until(7.0)
    assert [budget.earliest(lane, 1.0) for lane in Lane] == [7.0, 7.0, 7.0]


def test_an_invalid_share_is_refused() -> None:
    """A background share of 0 or more than 1 is a programming error."""
    with pytest.raises(ValueError):
        Budget(30, 10.0, background_share=0.0)


def test_the_lane_is_set_per_block() -> None:
    """request_lane sets the lane of requests made inside it; outside, requests are interactive."""
    assert current_lane() is Lane.INTERACTIVE
    with request_lane(Lane.BACKGROUND):
        assert current_lane() is Lane.BACKGROUND
    assert current_lane() is Lane.INTERACTIVE


# --- lanes: the threaded limiter ------------------------------------------------------------------------------


def test_interactive_does_not_wait_for_background_requests_that_have_not_started() -> None:
    """Background callers queued over their cap hold no slot: an interactive request starts at once."""
    limiter = SlidingWindowLimiter(4, 0.6)  # background cap 2, reserve 1
    for _ in range(2):
        limiter.acquire(Lane.BACKGROUND)
    waiting = [threading.Thread(target=limiter.acquire, args=(Lane.BACKGROUND,)) for _ in range(3)]
    for t in waiting:
        t.start()
    try:
        assert limiter.acquire(Lane.INTERACTIVE) == 0
        assert limiter.acquire(Lane.INTERACTIVE) == 0
    finally:
        for t in waiting:
            t.join(5.0)
    assert not any(t.is_alive() for t in waiting)


def test_a_waiting_first_look_goes_before_a_waiting_background_request() -> None:
    """When the window frees a slot, a first look waiting for it gets it before a background request."""
    limiter = SlidingWindowLimiter(4, 0.5, background_share=1.0)  # reserve 1: non-interactive lanes get 3
    for _ in range(3):
        limiter.acquire(Lane.FIRST_LOOK)
    order: list[str] = []
    lock = threading.Lock()

    def go(lane: Lane, name: str) -> None:
        limiter.acquire(lane)
        with lock:
            order.append(name)

    background = threading.Thread(target=go, args=(Lane.BACKGROUND, "background"))
    background.start()
    wait_until(lambda: bool(limiter._waiting[Lane.BACKGROUND]), timeout=5.0)
    first = threading.Thread(target=go, args=(Lane.FIRST_LOOK, "first look"))
    first.start()
    for t in (background, first):
        t.join(5.0)
    assert order == ["first look", "background"]


def test_a_waiting_request_whose_lane_is_raised_goes_at_once() -> None:
    """A background request waiting over its cap starts as soon as its lane becomes interactive."""
    limiter = SlidingWindowLimiter(4, 30.0)  # background cap 2
    for _ in range(2):
        limiter.acquire(Lane.BACKGROUND)
    lane = [Lane.BACKGROUND]
    waited: list[float] = []

    def request() -> None:
        with request_lane(lambda: lane[0]):
            waited.append(limiter.acquire())

    thread = threading.Thread(target=request)
    thread.start()
    wait_until(lambda: bool(limiter._waiting[Lane.BACKGROUND]), timeout=5.0)
    lane[0] = Lane.INTERACTIVE
    thread.join(5.0)
    assert not thread.is_alive() and waited and waited[0] < 5.0
