"""An editor writing back a stale buffer: a save that holds the previous prompt, a line break, and a new one.

After a send, ``prompt.txt`` is emptied while an editor that does not reload it still shows the sent text; its
next save writes that text back with the new one after it (vim and nano ask first, and people answer yes).
Such a save, within ``STALE_WINDOW_SECONDS`` of the previous prompt being taken, is sent as its new part only
(``docs/editors.md``). The previous text must be followed by a line break, so that a new prompt that merely
starts like the previous one (``Summarize X`` → ``Summarize X in French``) is sent whole; saving exactly the
previous prompt again sends it again (that is how a failed prompt is retried).
"""

from __future__ import annotations

from dataclasses import dataclass

STALE_WINDOW_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class PreviousSave:
    """The text of the last save taken from ``prompt.txt`` (before any cut), and when (wall clock)."""

    text: str
    at: float


def new_part(text: str, previous: PreviousSave | None, now: float) -> str | None:
    """What ``text`` adds to ``previous`` when it is the stale buffer plus a new prompt; ``None`` otherwise."""
    if previous is None or not previous.text or not 0 <= now - previous.at <= STALE_WINDOW_SECONDS:
        return None
    if not text.startswith(previous.text):
        return None
    rest = text[len(previous.text) :]
    if not rest.lstrip(" \t").startswith(("\n", "\r")):
        return None
    return rest.strip() or None
