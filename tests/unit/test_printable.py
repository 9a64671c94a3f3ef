"""Untrusted text made printable: every control character escaped, nothing else changed."""

from __future__ import annotations

from convsync.printable import printable, printable_lines


def test_every_c0_character_and_del_is_escaped() -> None:
    """NUL, ESC, BEL, tab, newline and every other C0 character, and DEL, become escapes."""
    escaped = printable("".join(chr(i) for i in range(32)) + "\x7f")
    assert all(ord(ch) >= 0x20 and ch != "\x7f" for ch in escaped)
    assert escaped.startswith("\\0\\x01\\x02") and "\\t\\n\\x0b\\x0c\\r" in escaped and escaped.endswith("\\x7f")
    assert "\\x1b" in escaped and "\\x07" in escaped


def test_c1_and_unicode_separators_and_bidi_overrides_are_escaped() -> None:
    """C1 controls, U+2028/U+2029 and the bidi overrides that reorder text are escaped too."""
    assert printable("a\x85b\u2028c\u202ed") == "a\\x85b\\u2028c\\u202ed"


def test_ordinary_text_is_unchanged() -> None:
    """Printable text, including non-ASCII letters and backslashes, passes unchanged."""
    text = "Q3 rapport: Ærø, 東京, C:\\path"
    assert printable(text) == text


def test_printable_lines_keeps_line_breaks_only() -> None:
    """For multi-line text (a traceback) newlines stay, everything else is escaped."""
    assert printable_lines("a\nb\x1b[0m\tc") == "a\nb\\x1b[0m\\tc"
