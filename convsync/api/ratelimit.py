"""The client-side rate limiter: at most N requests in any window of W seconds, shared by all threads.

It blocks (sleeps) rather than fails: the caller's request simply starts later. Each caller reserves a start
time under the lock and sleeps outside it, so threads queue in arrival order without holding the lock while
they wait. ``clock`` and ``sleep`` are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """Grants at most ``requests`` starts in any ``per_seconds`` window (a sliding log of start times)."""

    def __init__(
        self,
        requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests < 1:
            raise ValueError("a rate limit needs at least one request per window")
        if per_seconds <= 0:
            raise ValueError("a rate limit window must be longer than zero seconds")
        self.requests = requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # The start times of the last ``requests`` grants (some may lie in the future: reservations).
        self._starts: deque[float] = deque(maxlen=requests)
        self._not_before = 0.0

    def reserve(self) -> float:
        """Reserve the next start and return how many seconds the caller must wait before it (0 if none)."""
        with self._lock:
            now = self._clock()
            start = max(now, self._not_before)
            if len(self._starts) == self.requests:
                start = max(start, self._starts[0] + self.per_seconds)
            self._starts.append(start)
            return start - now

    def acquire(self) -> float:
        """Block until a request may start; return the seconds slept."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Start nothing for ``seconds`` from now (the server said 429 with ``Retry-After``)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + max(0.0, seconds))
