"""Backoff with full jitter and the parsing of a server's requested wait."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convsync.api.retry import Backoff, retry_after_seconds

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def test_backoff_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    """With the jitter at its top, waits are base·2ⁿ until the cap."""
    backoff = Backoff(base=0.5, cap=3.0, rand=lambda: 1.0)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_is_full_jitter() -> None:
    """The wait is a uniform fraction of the ceiling, down to zero."""
    assert Backoff(base=1.0, rand=lambda: 0.0).delay(3) == 0.0
    assert Backoff(base=1.0, rand=lambda: 0.25).delay(2) == pytest.approx(1.0)


def test_retry_after_is_a_lower_bound() -> None:
    """A server's Retry-After wins over a shorter jittered wait."""
    assert Backoff(rand=lambda: 0.0).delay(0, retry_after=7.0) == 7.0


def test_retry_after_beyond_max_wait_means_do_not_retry_here() -> None:
    """A server asking for more than max_wait gets None: the caller decides when to return."""
    assert Backoff(max_wait=60.0).delay(0, retry_after=3600.0) is None


def test_huge_attempt_numbers_do_not_overflow() -> None:
    """Attempt 10,000 still yields the cap."""
    assert Backoff(cap=5.0, rand=lambda: 1.0).delay(10_000) == 5.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"Retry-After": "Sat, 10 Jan 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Sat, 10 Jan 2026 11:59:00 GMT"}, 0.0),
        ({"RateLimit": '"50-in-10sec"; r=0; t=7', "RateLimit-Policy": '"50-in-10sec"; q=50; w=10'}, 7.0),
        ({"RateLimit": "limit=50, remaining=0, reset=4"}, 4.0),
        ({"RateLimit-Reset": "9"}, 9.0),
        ({"X-RateLimit-Reset": "3"}, 3.0),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 20)}, 20.0),
        ({"Retry-After": "5", "RateLimit": '"p"; r=0; t=9'}, 5.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds_reads_every_header_form(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After (seconds or HTTP date) and the RateLimit drafts all give the wait in seconds."""
    assert retry_after_seconds(headers, now=NOW) == expected
