"""The resend protection: a save holding the previous prompt, a line break and more sends only the new part."""

from __future__ import annotations

from convsync.mirror.resend import STALE_WINDOW_SECONDS, PreviousSave, new_part

T = 1_000_000.0
PREVIOUS = PreviousSave("What is the hottest day?", T)


def test_the_previous_prompt_then_a_new_line_sends_only_the_new_part() -> None:
    """An editor's stale buffer written back with the next prompt below it: the next prompt alone."""
    assert new_part("What is the hottest day?\nAnd the coldest?", PREVIOUS, T + 30) == "And the coldest?"


def test_a_prompt_that_merely_starts_like_the_previous_one_is_sent_whole() -> None:
    """Without a line break after the previous text it is a new prompt of its own."""
    assert new_part("What is the hottest day? In Oslo.", PREVIOUS, T + 30) is None


def test_the_same_prompt_again_is_sent_again() -> None:
    """Saving exactly the previous prompt (a retry) is not cut to nothing."""
    assert new_part("What is the hottest day?", PREVIOUS, T + 30) is None
    assert new_part("What is the hottest day?\n  \n", PREVIOUS, T + 30) is None


def test_after_the_window_the_whole_text_is_sent() -> None:
    """Long after the previous prompt was taken, a save is what the person wrote."""
    assert new_part("What is the hottest day?\nAnd the coldest?", PREVIOUS, T + STALE_WINDOW_SECONDS + 1) is None


def test_no_previous_prompt_means_no_cut() -> None:
    """The first prompt of a conversation is always sent whole."""
    assert new_part("What is the hottest day?\nAnd the coldest?", None, T) is None
