"""Per-item retries (convsync.mirror.itemretry): each failing file or frame waits on its own backoff."""

from __future__ import annotations

import pytest

from convsync.mirror.itemretry import ITEM_BACKOFF_CAP, ItemKey, ItemKind, ItemRetries

BAD = ItemKey(ItemKind.FRAME, "bad")
OTHER = ItemKey(ItemKind.FRAME, "other")


def test_a_failed_item_waits_and_the_others_do_not() -> None:
    """After a failure only that item waits; another item may be tried at once."""
    now = [100.0]
    retries = ItemRetries(clock=lambda: now[0])
    delay = retries.failed(BAD)
    assert retries.wait(BAD) == pytest.approx(delay) and retries.wait(OTHER) == 0.0
    now[0] += delay
    assert retries.wait(BAD) == 0.0


def test_repeated_failures_wait_longer_up_to_the_cap() -> None:
    """Each failure of the same item waits longer, never much beyond the cap (jitter is ±20 %)."""
    retries = ItemRetries(clock=lambda: 0.0)
    delays = [retries.failed(BAD) for _ in range(12)]
    assert delays[1] > delays[0] and delays[3] > delays[1]
    assert max(delays) <= ITEM_BACKOFF_CAP * 1.2


def test_success_and_disappearance_forget_the_failure() -> None:
    """A success, or the server no longer listing the item, clears its wait; next_due follows what is left."""
    retries = ItemRetries(clock=lambda: 0.0)
    retries.failed(BAD)
    retries.failed(OTHER)
    retries.succeeded(BAD)
    assert retries.wait(BAD) == 0.0 and retries.next_due() == retries.wait(OTHER)
    retries.keep_only(ItemKind.FRAME, ["bad"])
    assert retries.next_due() is None


def test_items_that_failed_before_go_after_the_fresh_ones() -> None:
    """A pass tries the items that never failed first (each group in its order), so one whose connection keeps
    failing, which ends the pass, never holds the others back."""
    retries = ItemRetries(clock=lambda: 0.0)
    retries.failed(BAD)
    names = ["bad", "first", "other", "last"]
    assert retries.fresh_first(ItemKind.FRAME, names, lambda n: n) == ["first", "other", "last", "bad"]
    retries.failed(OTHER)
    assert retries.fresh_first(ItemKind.FRAME, names, lambda n: n) == ["first", "last", "bad", "other"]
    assert retries.fresh_first(ItemKind.FILE, names, lambda n: n) == names
