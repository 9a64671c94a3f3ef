"""``<conversation>/cancel``: stop the reply that streams and take back the prompts still queued.

Creating the file (``touch cancel`` or ``convsync cancel DIR``) asks for it. A reply that streams stops at the
next piece the server sends, keep-alive pings included: convsync closes the stream, which cancels the run on the
server, and what streamed stands in the transcript, closed. Every prompt still queued for the conversation is
taken back into ``prompt.cancelled-<UTC time>.txt`` (one file each) instead of being sent; the transcript says
so in a ``## Cancelled`` block. Then the file is removed. A ``cancel`` found with nothing to stop is just removed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from convsync.errors import ConfigError
from convsync.mirror.atomic import write_atomic
from convsync.mirror.folders import CONVERSATION_MARKER
from convsync.mirror.state import State

CANCEL = "cancel"


def request(folder: Path) -> Path:
    """Ask for a cancel (``convsync cancel DIR``): create ``cancel`` in a conversation folder."""
    if not (folder / CONVERSATION_MARKER).is_file():
        raise ConfigError(
            [
                f"{folder} is not a conversation folder (it has no {CONVERSATION_MARKER} file). "
                "Fix: give the folder of a conversation"
            ]
        )
    path = folder / CANCEL
    path.touch()
    return path


def requested(folder: Path) -> bool:
    return (folder / CANCEL).exists()


def clear(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / CANCEL).unlink()


def take_back(folder: Path, state: State, cid: str) -> list[Path]:
    """Move every queued prompt of ``cid`` into ``prompt.cancelled-<UTC time>[-n].txt``; the files written."""
    kept: list[Path] = []
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    for entry in state.pending(cid):
        if entry.kind != "prompt":  # queued, or between attempts (one that may have reached the server shows there)
            continue
        path = folder / f"prompt.cancelled-{stamp}.txt"
        counter = 1
        while path.exists():
            counter += 1
            path = folder / f"prompt.cancelled-{stamp}-{counter}.txt"
        write_atomic(path, entry.payload + "\n")  # kept on disk before it leaves the queue
        state.mark_failed(entry.seq, "cancelled")
        kept.append(path)
    return kept


def notice_lines(stopped: bool, kept: list[Path]) -> list[str]:
    """The ``## Cancelled`` block's lines."""
    lines = ["You cancelled the reply above; it was stopped."] if stopped else []
    if kept:
        names = ", ".join(p.name for p in kept)
        lines.append(f"{len(kept)} queued prompt{'s' if len(kept) != 1 else ''} taken back, not sent: {names}")
    return lines
