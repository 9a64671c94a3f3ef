"""Untrusted text (server names, error bodies) made safe to show to a person.

Whatever convsync writes for a person (``errors.log``, ``status``, the log, ``convsync status``) passes text
that came from elsewhere through :func:`printable`: a control character could otherwise drive the terminal
(ESC sequences, BEL), make ``grep`` call the file binary (NUL), or start a new line that looks like one of
convsync's own.
"""

from __future__ import annotations

_NAMED = {0: "\\0", 9: "\\t", 10: "\\n", 13: "\\r"}
# C0, DEL, C1, the Unicode line and paragraph separators, and the bidi overrides (they reorder what is shown).
_CONTROLS = [
    *range(0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_TABLE = {cp: _NAMED.get(cp, f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}") for cp in _CONTROLS}
_KEEP_NEWLINES = {cp: text for cp, text in _TABLE.items() if cp != 10}


def printable(text: str) -> str:
    """``text`` on one line with every control character written as an escape: ``\\0``, ``\\n``, ``\\x1b``."""
    return text.translate(_TABLE)


def printable_lines(text: str) -> str:
    """Like :func:`printable`, but line breaks stay (for text that is several lines on purpose: a traceback)."""
    return text.translate(_KEEP_NEWLINES)
