"""The change hints of a list that carries ``updated_at``: what changed, and when the list stops being trusted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from convsync.api.models import Conversation
from convsync.mirror.hints import ChangeHints

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def listing(*stamps: tuple[str, datetime | None]) -> list[Conversation]:
    return [Conversation(cid, cid, "agent", updated_at=stamp) for cid, stamp in stamps]


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_changed_stamp_is_announced() -> None:
    """A conversation whose ``updated_at`` differs from the previous listing's is to be read now."""
    hints = ChangeHints()
    hints.listed(listing(("a", T0), ("b", T0)))
    assert hints.listed(listing(("a", T0), ("b", later(5)))) == ["b"]


def test_a_conversation_seen_for_the_first_time_is_not_a_change() -> None:
    """The first listing of a conversation has nothing to compare with: its first look reads it anyway."""
    hints = ChangeHints()
    assert hints.listed(listing(("a", T0))) == []


def test_a_list_without_stamps_announces_nothing() -> None:
    """Without ``updated_at`` (absent or unreadable: None) the lists pass reads nothing extra."""
    hints = ChangeHints()
    hints.listed(listing(("a", None)))
    assert hints.listed(listing(("a", None))) == []


def test_news_the_list_never_announces_makes_it_untrusted() -> None:
    """A read finds new messages, and two later listings still show the old stamp: the hint is ignored."""
    hints = ChangeHints()
    hints.listed(listing(("a", T0), ("b", T0)))
    hints.read("a", news=False)
    hints.read("a", news=True)
    hints.listed(listing(("a", T0), ("b", T0)))
    assert hints.trusted
    hints.listed(listing(("a", T0), ("b", T0)))
    assert not hints.trusted
    assert hints.listed(listing(("a", T0), ("b", later(9)))) == []


def test_an_untrusted_list_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Distrust is logged once at warning, however many unannounced reads follow."""
    caplog.set_level(logging.INFO, logger="convsync")
    hints = ChangeHints()
    hints.listed(listing(("a", T0), ("b", T0)))
    for cid in ("a", "b", "a", "b"):
        hints.read(cid, news=False)
        hints.read(cid, news=True)
        hints.listed(listing(("a", T0), ("b", T0)))
        hints.listed(listing(("a", T0), ("b", T0)))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no longer trusts" in r.getMessage()]
    assert len(warnings) == 1


def test_news_a_later_listing_announces_keeps_the_trust() -> None:
    """A listing looked at after the read but answered before the message was stored shows the old stamp;
    the next one shows the new stamp: the list told the truth."""
    hints = ChangeHints()
    hints.listed(listing(("a", T0)))
    hints.read("a", news=False)
    hints.read("a", news=True)
    hints.listed(listing(("a", T0)))
    hints.listed(listing(("a", later(3))))
    hints.listed(listing(("a", later(3))))
    assert hints.trusted


def test_news_the_list_announced_before_the_read_keeps_the_trust() -> None:
    """A read after a listing showed the new stamp found what the list announced."""
    hints = ChangeHints()
    hints.listed(listing(("a", T0)))
    hints.read("a", news=False)
    assert hints.listed(listing(("a", later(3)))) == ["a"]
    hints.read("a", news=True)
    hints.listed(listing(("a", later(3))))
    hints.listed(listing(("a", later(3))))
    assert hints.trusted


@pytest.mark.parametrize("value", [None, "", "yesterday", 1733313600, "2026-13-45T99:00:00Z", {"at": 1}])
def test_an_unreadable_updated_at_is_none(value: object) -> None:
    """``updated_at`` null, empty, garbled or of the wrong type parses as None (no hint), not as an error."""
    wire: dict[str, object] = {"id": "c", "name": "n", "agent_id": "a", "updated_at": value}
    assert Conversation.from_wire(wire).updated_at is None


def test_a_readable_updated_at_is_parsed() -> None:
    """A REST ``…Z`` timestamp in the list becomes an aware datetime; a list without the key gives None."""
    wire = {"id": "c", "name": "n", "agent_id": "a", "updated_at": "2026-12-04T12:00:00.5Z"}
    assert Conversation.from_wire(wire).updated_at == T0 + timedelta(seconds=0.5)
    assert Conversation.from_wire({"id": "c", "name": "n", "agent_id": "a"}).updated_at is None
