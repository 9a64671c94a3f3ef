"""When to try a failed request again, and after how long (pure: no I/O, the caller sleeps).

- :class:`Backoff`: exponential backoff with full jitter (a uniform wait in ``[0, min(cap, base·2ⁿ)]``), so
  many clients failing together spread out; a server's ``Retry-After`` is honoured as a lower bound.
- :func:`retry_after_seconds`: how long a 429/503 answer asks us to wait, from ``Retry-After`` (seconds or an
  HTTP date) or the IETF ``RateLimit`` header drafts that express-rate-limit sends (the self-hosted gateway).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter.

    ``base`` is the ceiling of the first wait, doubled per attempt up to ``cap``. A server-given wait longer
    than ``max_wait`` is not slept through: the caller gets the error and decides when to come back.
    """

    base: float = 0.5
    cap: float = 20.0
    max_wait: float = 60.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

        ``None`` means: don't retry here, because the server asked for a wait longer than ``max_wait``.
        """
        ceiling = min(self.cap, self.base * (2.0 ** min(attempt, 32)))
        jittered: float = ceiling * self.rand()
        if retry_after is None:
            return jittered
        if retry_after > self.max_wait:
            return None
        return max(float(retry_after), jittered)


_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def _seconds(value: str) -> float | None:
    match = _NUMBER.match(value)
    return float(match.group(1)) if match else None


def _draft_param(value: str, name: str) -> float | None:
    """A ``name=<number>`` parameter of a structured RateLimit header (``;`` or ``,`` separated)."""
    match = re.search(rf"(?:^|[;,\s]){name}\s*=\s*(\d+(?:\.\d+)?)", value)
    return float(match.group(1)) if match else None


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """How many seconds the server asks us to wait, or ``None`` if it did not say.

    Understood, in this order: ``Retry-After: <seconds>`` or ``Retry-After: <HTTP-date>``; draft-8
    ``RateLimit: "policy";r=0;t=7`` (``t``); draft-7 ``RateLimit: limit=50, remaining=0, reset=7``
    (``reset``); draft-6 ``RateLimit-Reset: 7``; ``X-RateLimit-Reset`` as seconds or, when it looks like
    one, a Unix time.
    """
    lower = {key.lower(): value for key, value in headers.items()}
    current = now or datetime.now(UTC)
    retry_after = lower.get("retry-after")
    if retry_after:
        seconds = _seconds(retry_after)
        if seconds is not None:
            return seconds
        try:
            when = parsedate_to_datetime(retry_after.strip())
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - current).total_seconds())
    ratelimit = lower.get("ratelimit")
    if ratelimit:
        for name in ("t", "reset"):
            seconds = _draft_param(ratelimit, name)
            if seconds is not None:
                return seconds
    reset = lower.get("ratelimit-reset")
    if reset and (seconds := _seconds(reset)) is not None:
        return seconds
    reset = lower.get("x-ratelimit-reset")
    if reset and (seconds := _seconds(reset)) is not None:
        if seconds > 1_000_000_000:  # a Unix timestamp, not a delay
            return max(0.0, seconds - current.timestamp())
        return seconds
    return None
