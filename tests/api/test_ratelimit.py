"""The client-side rate limiter on a fake clock: a sliding window that makes callers wait, never fail."""

from __future__ import annotations

import threading

import pytest

from convsync.api.ratelimit import SlidingWindowLimiter


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
