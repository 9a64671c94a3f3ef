"""``transcript.md``: server messages → Markdown, appended live while a reply streams.

The file is always *the rendering of the messages the state database records as committed* (a prefix),
possibly followed by a *live tail* (the prompt being sent and the reply streaming in). Rendering is
deterministic, so the live tail normally equals the final rendering and no rewrite is needed: every part
renders as
``prefix + streamed text + suffix``.

Rendering of one message::

    ## Agent · 2025-06-23 15:05 UTC          heading: role and minute (UTC)

    <details><summary>Thought</summary>      thoughts, tool calls, charts, quick actions: collapsed blocks

    …

    </details>

    The answer, as written.                  text parts as written

Times are shown to the minute on purpose: the heading written when a reply *starts* streaming then matches the
server's own timestamp in almost every case, so ``tail -f`` keeps working (see ``docs/layout.md``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from convsync import killpoints
from convsync.api.models import (
    AttachmentPart,
    ChartPart,
    Message,
    MessageFinished,
    MessageStarted,
    OtherPart,
    Part,
    PartDelta,
    QuickActionsPart,
    TextPart,
    ThoughtPart,
    ToolCallPart,
)
from convsync.mirror.atomic import append_record, read_regular, write_atomic
from convsync.mirror.names import safe_name
from convsync.mirror.state import TranscriptEntry

ROLE_LABELS = {"user": "User", "agent": "Agent"}
_STREAMABLE = ("text", "formatted-text", "thought")


# --- rendering (pure) ---------------------------------------------------------------------------------------


INCOMPLETE_MARK = " (incomplete)"


def heading(role: str, when: datetime, *, complete: bool = True) -> str:
    label = ROLE_LABELS.get(role, role.capitalize() or "Unknown")
    # Formatted by hand: strftime (and astimezone on a time already in UTC) were the slow part of rendering.
    u = when if when.tzinfo is UTC else when.astimezone(UTC)
    mark = "" if complete else INCOMPLETE_MARK
    return f"## {label} · {u.year:04d}-{u.month:02d}-{u.day:02d} {u.hour:02d}:{u.minute:02d} UTC{mark}\n\n"


def _fence(text: str, info: str = "") -> str:
    """A fenced code block that the content cannot close early (fence longer than any backtick run in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>\n\n"


def _summary_text(text: str) -> str:
    """Text safe inside ``<summary>``: one line, no markup."""
    one_line = " ".join(text.split())
    return one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def part_prefix(kind: str) -> str:
    """What precedes the streamed text of a part of ``kind`` (only text and thoughts stream)."""
    if kind == "thought":
        return "<details><summary>Thought</summary>\n\n"
    return ""


def part_suffix(kind: str) -> str:
    if kind == "thought":
        return "\n\n</details>\n\n"
    return "\n\n"


def render_part(part: Part) -> str:
    if isinstance(part, TextPart):
        return part_prefix(part.kind) + part.text + part_suffix(part.kind)
    if isinstance(part, ThoughtPart):
        return part_prefix("thought") + part.thought + part_suffix("thought")
    if isinstance(part, ToolCallPart):
        status = f" ({part.status})" if part.status else ""
        body = "Arguments:\n\n" + _fence(_pretty_json(part.arguments_raw), "json")
        if part.result is not None:
            body += "\n\nResult:\n\n" + _fence(part.result)
        if part.error:
            body += "\n\nError:\n\n" + _fence(part.error)
        return _details(f"Tool call: {_summary_text(part.name)}{status}", body)
    if isinstance(part, AttachmentPart):
        name = safe_name(part.name or "attachment")
        mime = f" ({part.mime_type})" if part.mime_type else ""
        desc = f": {' '.join(part.description.split())}" if part.description else ""
        return f"Attachment: [{_link_text(part.name or name)}](files/{quote(name)}){mime}{desc}\n\n"
    if isinstance(part, QuickActionsPart):
        items = "\n".join(
            f"- {label}" + (f": `{value}`" if value and value != label else "") for label, value in part.actions
        )
        return _details("Quick actions", items or "(none)")
    if isinstance(part, ChartPart):
        title = f"Chart: {_summary_text(part.description)}" if part.description else "Chart"
        return _details(title, _fence(_pretty_json(part.chart_spec_raw), "json"))
    assert isinstance(part, OtherPart)
    return f"_(a part of kind `{part.kind}` that convsync does not show)_\n\n"


def _link_text(text: str) -> str:
    return " ".join(text.split()).replace("[", "\\[").replace("]", "\\]")


def _pretty_json(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw


def render_message(message: Message) -> str:
    head = heading(message.role, message.created_at, complete=message.complete)
    return head + "".join(render_part(p) for p in message.content)


def renderable(messages: Sequence[Message]) -> list[Message]:
    """The messages the transcript shows, in server order: all but a last one still being written.

    An incomplete message with others after it will not be finished (a failed or cancelled run may leave one):
    it is shown with its heading marked ``(incomplete)`` rather than hiding everything after it.
    """
    if messages and not messages[-1].complete:
        return list(messages[:-1])
    return list(messages)


# --- planning a transcript update (pure) --------------------------------------------------------------------


def digest(text: str) -> str:
    """The hash the state records for one message's rendering."""
    return Rendered.of("", text).hash


class Rendered(NamedTuple):  # a tuple, not a frozen dataclass: built for every message on every poll
    message_id: str
    text: str
    hash: str
    size: int  # bytes of UTF-8

    @classmethod
    def of(cls, message_id: str, text: str) -> Rendered:
        data = text.encode("utf-8")  # once: every poll renders and compares every message
        return cls(message_id, text, hashlib.sha256(data).hexdigest(), len(data))


@dataclass(frozen=True, slots=True)
class TranscriptPlan:
    """What to do to make the file the rendering of the server's messages.

    ``keep``: how many committed entries stay; ``write``: ``"none"`` (the file already holds it: only commit),
    ``"append"`` (append ``append_text`` after the current end), or ``"rewrite"`` (replace the whole file);
    ``commit``: the entries to record after ``keep`` once the write happened.
    """

    keep: int
    write: str
    append_text: str
    commit: tuple[TranscriptEntry, ...]
    full_text: str


def plan_transcript(
    committed: Sequence[TranscriptEntry],
    file_size: int | None,
    tail: str | None,
    messages: Sequence[Message],
    *,
    live: bool = False,
) -> TranscriptPlan:
    """Decide how to bring ``transcript.md`` in line with ``messages`` (the server's, oldest first).

    ``committed``: the state's entries; ``file_size``: the file's size (``None``: missing); ``tail``: the
    file's bytes after the committed offset, decoded (``None`` when the file is shorter or not UTF-8);
    ``live``: a reply is in flight, so a tail that runs ahead of the server is kept rather than cut.
    """
    rendered = [Rendered.of(m.message_id, render_message(m)) for m in renderable(messages)]
    keep = 0
    while (
        keep < len(committed)
        and keep < len(rendered)
        and committed[keep].message_id == rendered[keep].message_id
        and committed[keep].rendered_hash == rendered[keep].hash
    ):
        keep += 1
    offset = committed[keep - 1].committed_offset if keep else 0
    full_text = "".join(r.text for r in rendered)
    new = rendered[keep:]

    def entries(start: int) -> tuple[TranscriptEntry, ...]:
        out: list[TranscriptEntry] = []
        pos = start
        for r in new:
            pos += r.size
            out.append(TranscriptEntry(r.message_id, r.hash, pos))
        return tuple(out)

    if keep < len(committed) or file_size is None or tail is None:
        return TranscriptPlan(0, "rewrite", "", _entries_from(rendered), full_text)
    new_text = "".join(r.text for r in new)
    if tail == new_text:
        return TranscriptPlan(keep, "none", "", entries(offset), full_text)
    if new_text.startswith(tail):
        return TranscriptPlan(keep, "append", new_text[len(tail) :], entries(offset), full_text)
    if live and tail.startswith(new_text):
        # The server lags behind what streamed: commit what it confirms, keep the rest of the tail live.
        return TranscriptPlan(keep, "none", "", entries(offset), full_text)
    return TranscriptPlan(0, "rewrite", "", _entries_from(rendered), full_text)


def _entries_from(rendered: Sequence[Rendered]) -> tuple[TranscriptEntry, ...]:
    out: list[TranscriptEntry] = []
    pos = 0
    for r in rendered:
        pos += r.size
        out.append(TranscriptEntry(r.message_id, r.hash, pos))
    return tuple(out)


# --- the file -----------------------------------------------------------------------------------------------


def read_tail(path: Path, offset: int) -> tuple[int | None, str | None]:
    """(file size, text after ``offset``) — size ``None`` when the file is missing, text ``None`` when the
    bytes after ``offset`` are not valid UTF-8 or the file is shorter than ``offset``."""
    found = read_regular(path, offset)
    if found is None:
        return None, None
    size, raw = found
    if size < offset:
        return size, None
    try:
        return size, raw.decode("utf-8")
    except UnicodeDecodeError:
        return size, None


def apply_plan(path: Path, plan: TranscriptPlan) -> None:
    """Carry out the file half of ``plan`` (the caller commits ``plan.commit`` to the state afterwards)."""
    if plan.write == "rewrite":
        write_atomic(path, plan.full_text)
    elif plan.write == "append" and plan.append_text:
        append_record(path, plan.append_text)


class LiveTail:
    """Appends the prompt being sent and the streaming reply to ``transcript.md``, each chunk in one write.

    The output is the rendering of the final messages whenever the stream carried every part in order, so that
    ``plan_transcript`` afterwards finds nothing to rewrite.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: tuple[str, int, str] | None = None  # (message id, part index, kind) being streamed
        self._skipped = False

    def _write(self, text: str) -> None:
        if text:
            append_record(self.path, text)
            killpoints.reached("transcript.live")

    def user_prompt(self, text: str, when: datetime) -> None:
        self._write(heading("user", when) + render_part(TextPart("", text)))

    def on_event(self, event: object, now: datetime) -> None:
        if isinstance(event, MessageStarted):
            self._close()
            self._write(heading("agent", now))
        elif isinstance(event, PartDelta):
            self._delta(event)
        elif isinstance(event, MessageFinished):
            self._close()

    def _delta(self, event: PartDelta) -> None:
        key = (event.message_id, event.index)
        if self._open is not None and (self._open[0], self._open[1]) == key:
            if self._open[2] in _STREAMABLE:
                self._write(event.text)
            return
        self._close()
        self._open = (event.message_id, event.index, event.kind)
        if event.kind in _STREAMABLE:
            self._write(part_prefix(event.kind) + event.text)
        else:
            self._skipped = True

    def _close(self) -> None:
        if self._open is not None and self._open[2] in _STREAMABLE:
            self._write(part_suffix(self._open[2]))
        self._open = None
