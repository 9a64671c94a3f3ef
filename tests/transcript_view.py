"""What a transcript shows once revisions are read: the check that a transcript "is the server's messages"
when streams were cut, runs failed or convsync was killed (an append-only file keeps what was written)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from convsync.api.models import Message
from convsync.mirror.transcript import INCOMPLETE_MARK, ROLE_LABELS, render_body, renderable

_HEADING = re.compile(
    r"^## (.+?) · \d{4}-\d\d-\d\d \d\d:\d\d UTC((?: \(incomplete\))?)((?: · revised)?)\n\n", re.MULTILINE
)


def view(text: str) -> list[tuple[str, str]]:
    """(role label, body) per message as a reader takes it: a revision replaces the nearest message above with
    its role, text followed by an "Interrupted" notice is dropped, failure and cancel notices are skipped."""
    pieces = _HEADING.split(text)
    out: list[tuple[str, str]] = [("", pieces[0])] if pieces[0] else []
    for i in range(1, len(pieces), 4):
        label, incomplete, revised, body = pieces[i], pieces[i + 1], pieces[i + 2], pieces[i + 3]
        label += incomplete
        if label == "Interrupted":
            if out:
                out.pop()
        elif label in ("Failed", "Cancelled"):
            continue
        elif revised:
            above = max((j for j, (seen, _) in enumerate(out) if seen == label), default=None)
            if above is None:
                out.append((label, body))
            else:
                out[above] = (label, body)
        else:
            out.append((label, body))
    return out


def server_view(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [
        (ROLE_LABELS.get(m.role, m.role.capitalize()) + ("" if m.complete else INCOMPLETE_MARK), render_body(m))
        for m in renderable(messages)
    ]


def shows(text: str, messages: Sequence[Message]) -> bool:
    """Whether ``text`` shows exactly ``messages`` (each once, in order, in their final form)."""
    return view(text) == server_view(messages)
