"""``transcript.md``: server messages → Markdown, only ever appended to.

The file is a log that a follower (``tail -f``, ``less +F``, an editor's auto-reload) can trust: it is never
replaced by rename and never truncated, so its inode and every byte once written stay for the life of the
conversation (``docs/layout.md`` states the contract). It holds, in the order convsync saw them:

- every message once, rendered live in its final form while a reply streams (:class:`LiveTail`), or appended
  when a poll finds it;
- a *revision* (``## Agent · … UTC · revised``) when the server's version of a message differs from what was
  written (the stream broke, or the message changed on the server later): the message's final form, appended;
- *notices* of convsync's own (``## Failed · …``, ``## Cancelled · …``): a run that failed or was cancelled.

Heading times are cosmetic: what was written stands, and a message whose streamed heading shows another minute
than the server's ``created_at`` is not revised for that alone.

Rendering of one message::

    ## Agent · 2025-06-23 15:05 UTC          heading: role and minute (UTC)

    <details><summary>Thought</summary>      thoughts, tool calls, charts, quick actions: collapsed blocks

    …

    </details>

    The answer, as written.                  text parts as written (a fence or HTML block left open is closed)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
    PartFinished,
    QuickActionsPart,
    StreamStarted,
    TextPart,
    ThoughtPart,
    ToolCallPart,
)
from convsync.mirror import charts
from convsync.mirror.atomic import append_record, read_regular, write_atomic
from convsync.mirror.names import safe_name
from convsync.mirror.state import TranscriptEntry

ROLE_LABELS = {"user": "User", "agent": "Agent"}
NOTICE_LABELS = ("Failed", "Cancelled", "Interrupted")
INTERRUPTED = "The reply above is incomplete: its stream ended early. The server's version follows once it has one."
_STREAMABLE = ("text", "formatted-text", "thought")
HASH_PREFIX = "c:"  # content hashes; entries written before the log became append-only hold rendering hashes
NOTICE_ID = "~notice"  # transcript entries that are convsync's own text, not a server message
ORPHAN_ID = "~orphan"
_STAMP = r" · \d{4}-\d\d-\d\d \d\d:\d\d UTC"
_NOTICE = re.compile(r"## (?:" + "|".join(NOTICE_LABELS) + r")" + _STAMP + r"\n\n(?:> [^\n]*\n)+\n")
_NOTICE_AT_END = re.compile(r"(?:^|\n)" + _NOTICE.pattern + r"\Z")
_HEADING = re.compile(r"^## ([^\n]*?)" + _STAMP + r"(?: \(incomplete\))?(?: · revised)?\n", re.MULTILINE)


# --- rendering (pure) ---------------------------------------------------------------------------------------


INCOMPLETE_MARK = " (incomplete)"


def _label(role: str) -> str:
    return ROLE_LABELS.get(role, role.capitalize() or "Unknown")


def _minute(when: datetime) -> str:
    # Formatted by hand: strftime (and astimezone on a time already in UTC) were the slow part of rendering.
    u = when if when.tzinfo is UTC else when.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d} {u.hour:02d}:{u.minute:02d}"


def heading(role: str, when: datetime, *, complete: bool = True, revised: bool = False) -> str:
    mark = ("" if complete else INCOMPLETE_MARK) + (" · revised" if revised else "")
    return f"## {_label(role)} · {_minute(when)} UTC{mark}\n\n"


def notice(label: str, when: datetime, lines: Sequence[str]) -> str:
    """A block of convsync's own (``label`` one of ``NOTICE_LABELS``): a heading and one quoted line each."""
    body = "".join(f"> {' '.join(line.split())}\n" for line in lines)
    return f"## {label} · {_minute(when)} UTC\n\n{body}\n"


def _fence(text: str, info: str = "") -> str:
    """A fenced code block that the content cannot close early (fence longer than any backtick run in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
# CommonMark HTML blocks that run until an end marker rather than a blank line: (start, end marker); no
# marker: the closing tag of the element that opened it.
_HTML_BLOCKS = (
    (re.compile(r" {0,3}<(pre|script|style|textarea)(?:[\s>]|$)", re.IGNORECASE), ""),
    (re.compile(r" {0,3}<!--"), "-->"),
    (re.compile(r" {0,3}<\?"), "?>"),
    (re.compile(r" {0,3}<!\[CDATA\["), "]]>"),
)


def closer(text: str) -> str:
    """What closes a code fence or HTML block that ``text`` leaves open (``""`` if none), so that one
    message's Markdown can never swallow the headings after it."""
    fence: str | None = None
    end: str | None = None  # the end marker of an open HTML block
    for line in text.split("\n"):
        if end is not None:
            if end.lower() in line.lower():
                end = None
            continue
        m = _FENCE_LINE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
                fence = None
            continue
        if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fence = m.group(1)
            continue
        for start, marker in _HTML_BLOCKS:
            found = start.match(line)
            if found:
                wanted = marker or f"</{found.group(1).lower()}>"
                if wanted not in line.lower()[found.end() :]:
                    end = wanted
                break
    if fence is None and end is None:
        return ""
    sep = "" if text.endswith("\n") else "\n"
    return sep + (fence if fence is not None else str(end))


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


def part_suffix(kind: str, text: str = "") -> str:
    """What follows the streamed ``text`` of a part of ``kind``: a closer for what it left open, the end."""
    if kind == "thought":
        return closer(text) + "\n\n</details>\n\n"
    return closer(text) + "\n\n"


def render_part(part: Part, message_id: str = "", index: int = 0) -> str:
    """One part; ``message_id`` and ``index`` name a chart's drawing (``convsync.mirror.charts``)."""
    if isinstance(part, TextPart):
        return part_prefix(part.kind) + part.text + part_suffix(part.kind, part.text)
    if isinstance(part, ThoughtPart):
        return part_prefix("thought") + part.thought + part_suffix("thought", part.thought)
    if isinstance(part, ToolCallPart):
        status = f" ({part.status})" if part.status else ""
        body = "Arguments:\n\n" + _json_block(part.arguments_raw)
        if part.result is not None:
            body += "\n\nResult:\n\n" + _json_block(part.result)
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
        if message_id and charts.available():
            image = f"![{_link_text(title)}]({quote(charts.link(message_id, index))})\n\n"
            return image + _details("Chart spec (Vega-Lite)", _json_block(part.chart_spec_raw))
        return _details(title, _json_block(part.chart_spec_raw))
    assert isinstance(part, OtherPart)
    return f"_(a part of kind `{part.kind}` that convsync does not show)_\n\n"


def _link_text(text: str) -> str:
    return " ".join(text.split()).replace("[", "\\[").replace("]", "\\]")


def _json_block(raw: str) -> str:
    """JSON pretty-printed in a ``json`` fence; anything else as it is, in a plain fence."""
    try:
        return _fence(json.dumps(json.loads(raw), indent=2, ensure_ascii=False), "json")
    except ValueError:
        return _fence(raw)


def render_body(message: Message) -> str:
    return "".join(render_part(p, message.message_id, i) for i, p in enumerate(message.content))


def render_message(message: Message, *, revised: bool = False) -> str:
    head = heading(message.role, message.created_at, complete=message.complete, revised=revised)
    return head + render_body(message)


def renderable(messages: Sequence[Message]) -> list[Message]:
    """The messages the transcript shows, in server order: all but a last one still being written.

    An incomplete message with others after it will not be finished (a failed or cancelled run may leave one):
    it is shown with its heading marked ``(incomplete)`` rather than hiding everything after it.
    """
    if messages and not messages[-1].complete:
        return list(messages[:-1])
    return list(messages)


def content_hash(message: Message) -> str:
    """What the state records for a message shown: its role and content, not its time (cosmetic) nor its
    rendering (a new convsync rendering a part differently is no change on the server)."""
    data = f"{message.role}\x1f{message.complete}\x1f{message.content!r}".encode()
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


# --- planning a transcript update (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranscriptPlan:
    """What to do to make the file show the server's messages.

    ``keep``: how many committed entries stay (all of them, except when the file is written anew or old
    entries are converted); ``write``: ``"none"`` (only commit), ``"append"`` (append ``append_text``), or
    ``"rewrite"`` (the file is missing or shorter than recorded: write ``full_text`` as a new file);
    ``commit``: the entries to record after ``keep`` once the write happened.
    """

    keep: int
    write: str
    append_text: str
    commit: tuple[TranscriptEntry, ...]
    full_text: str = ""


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _match(tail: str, pos: int, message: Message) -> int | None:
    """Where ``message`` ends if the tail holds it at ``pos`` (its heading may show any minute)."""
    mark = ("" if message.complete else re.escape(INCOMPLETE_MARK)) + "(?: · revised)?"
    found = re.compile(re.escape("## " + _label(message.role)) + _STAMP + mark + r"\n\n").match(tail, pos)
    if found is None:
        return None
    body = render_body(message)
    return found.end() + len(body) if tail.startswith(body, found.end()) else None


def _last_role(text: str) -> str | None:
    """The role label of the last message heading in ``text`` (``None`` if there is none)."""
    labels = [m.group(1) for m in _HEADING.finditer(text)]
    return labels[-1] if labels else None


def plan_transcript(
    committed: Sequence[TranscriptEntry],
    file_size: int | None,
    tail: str | None,
    messages: Sequence[Message],
    *,
    live: bool = False,
    now: datetime | None = None,
) -> TranscriptPlan:
    """Decide what to append to ``transcript.md`` so that it shows ``messages`` (the server's, oldest first).

    ``committed``: the state's entries; ``file_size``: the file's size (``None``: missing); ``tail``: the
    file's bytes after the committed offset, decoded with ``surrogateescape`` (``None`` when the file is
    shorter than that offset); ``live``: a reply is in flight, so a tail that runs ahead of the server is kept
    as it is; ``now``: the time of a notice the plan appends.
    """
    shown = renderable(messages)
    if file_size is None or tail is None:
        return _written_anew(shown)
    keep, base = _converted(committed, shown)
    latest = {e.message_id: e.rendered_hash for e in base}
    digests = {m.message_id: content_hash(m) for m in shown}
    offset = committed[-1].committed_offset if committed else 0
    # 1. The tail: what was appended live since the last commit (messages streamed, notices), and revisions
    # appended by a pass that was killed before it could commit them (else they would be appended again).
    waiting = [m for m in shown if m.message_id not in latest]
    changed = [m for m in shown if m.message_id in latest and latest[m.message_id] != digests[m.message_id]]
    candidates = waiting + changed
    pos, added = _match_tail(tail, offset, candidates)
    if pos < len(tail) and not live:
        resumed = _after_closed_orphan(tail, pos, offset, candidates)
        if resumed is not None:
            pos, more = resumed
            added += more
    unmatched = {m.message_id for m in candidates}
    waiting = [m for m in waiting if m.message_id in unmatched]
    latest.update((e.message_id, e.rendered_hash) for e in added if e.message_id in digests)
    rest = tail[pos:]
    if rest and live:
        return TranscriptPlan(keep, "none", "", (*base[keep:], *added))
    # 2. What was written and is not the server's stands, closed; the server's version follows as a revision.
    size = offset + _nbytes(tail)
    out: list[str] = []
    revise: str | None = None
    if rest:
        revise = _last_role(rest)
        close = closer(rest)
        close += "" if (rest + close).endswith("\n\n") else ("\n" if (rest + close).endswith("\n") else "\n\n")
        first = waiting[0] if waiting else None
        said = _NOTICE_AT_END.search(rest) is not None  # it ends with convsync's own word (failed, cancelled)
        if not said and (first is None or _label(first.role) != revise):  # no revision follows: say it is cut
            close += notice("Interrupted", now or datetime.now(UTC), [INTERRUPTED])
        out.append(close)
        size += _nbytes(close)
        added.append(TranscriptEntry(ORPHAN_ID, "", size))
    # 3. New messages and changed ones, in the server's order.
    pending = {m.message_id for m in waiting}
    for m in shown:
        digest = digests[m.message_id]
        if m.message_id in pending:
            text = render_message(m, revised=revise is not None and _label(m.role) == revise)
            revise = None
        elif m.message_id in latest and latest[m.message_id] != digest:
            text = render_message(m, revised=True)
        else:
            continue
        out.append(text)
        size += _nbytes(text)
        added.append(TranscriptEntry(m.message_id, digest, size))
    text = "".join(out)
    return TranscriptPlan(keep, "append" if text else "none", text, (*base[keep:], *added))


def _converted(committed: Sequence[TranscriptEntry], shown: Sequence[Message]) -> tuple[int, list[TranscriptEntry]]:
    """(entries kept, all entries): entries of a convsync that rewrote the file to match the server hold
    rendering hashes; what they show was the server's, so they get its content hashes (no revision)."""
    if all(e.message_id.startswith("~") or e.rendered_hash.startswith(HASH_PREFIX) for e in committed):
        return len(committed), list(committed)
    by_id = {m.message_id: m for m in shown}
    return 0, [
        TranscriptEntry(e.message_id, content_hash(by_id[e.message_id]), e.committed_offset)
        if e.message_id in by_id and not e.rendered_hash.startswith(HASH_PREFIX)
        else e
        for e in committed
    ]


def _match_tail(tail: str, offset: int, waiting: list[Message]) -> tuple[int, list[TranscriptEntry]]:
    """How far the tail holds notices and messages of ``waiting`` (removed from it as they are found;
    a message's heading may be marked revised), and the entries for them."""
    pos = 0
    added: list[TranscriptEntry] = []
    while pos < len(tail):
        end: int | None = None
        entry_id, entry_hash = NOTICE_ID, ""
        found = _NOTICE.match(tail, pos)
        if found is not None:
            end = found.end()
        else:
            for m in waiting:
                end = _match(tail, pos, m)
                if end is not None:
                    waiting.remove(m)
                    entry_id, entry_hash = m.message_id, content_hash(m)
                    break
        if end is None:
            break
        pos = end
        added.append(TranscriptEntry(entry_id, entry_hash, offset + _nbytes(tail[:pos])))
    return pos, added


_BLOCK_START = re.compile(r"(?<=\n\n)## [^\n]*?" + _STAMP)  # a heading of a message or notice of convsync's


def _after_closed_orphan(
    tail: str, pos: int, offset: int, candidates: list[Message]
) -> tuple[int, list[TranscriptEntry]] | None:
    """A cut piece at ``pos`` that a pass killed before its commit had already closed and followed with what it
    appended (a notice, the server's version): the end of the tail and the entries (the piece an orphan), so
    that it is committed, not closed and appended a second time. ``None`` unless the rest matches to the end.
    Only the first heading after the closed piece is tried: one trial, whatever the size of the tail."""
    for start in _BLOCK_START.finditer(tail, pos + 1):
        at = start.start()
        if closer(tail[pos:at]):
            continue  # still inside a fence or HTML block of the cut piece
        trial = list(candidates)
        at_offset = offset + _nbytes(tail[:at])
        end, added = _match_tail(tail[at:], at_offset, trial)
        if not added or at + end != len(tail):
            return None
        candidates[:] = trial
        return len(tail), [TranscriptEntry(ORPHAN_ID, "", at_offset), *added]
    return None


def _written_anew(shown: Sequence[Message]) -> TranscriptPlan:
    """The file is gone (or someone cut it): it is written again, whole, from the server's messages."""
    entries: list[TranscriptEntry] = []
    texts: list[str] = []
    size = 0
    for m in shown:
        texts.append(render_message(m))
        size += _nbytes(texts[-1])
        entries.append(TranscriptEntry(m.message_id, content_hash(m), size))
    return TranscriptPlan(0, "rewrite", "", tuple(entries), "".join(texts))


# --- the file -----------------------------------------------------------------------------------------------


def read_tail(path: Path, offset: int) -> tuple[int | None, str | None]:
    """(file size, text after ``offset``) — size ``None`` when the file is missing, text ``None`` when the
    file is shorter than ``offset``. Bytes that are not UTF-8 (a write cut by a crash) decode as surrogates,
    so that sizes computed from the text are the file's."""
    found = read_regular(path, offset)
    if found is None:
        return None, None
    size, raw = found
    if size < offset:
        return size, None
    return size, raw.decode("utf-8", "surrogateescape")


def apply_plan(path: Path, plan: TranscriptPlan) -> None:
    """Carry out the file half of ``plan`` (the caller commits ``plan.commit`` to the state afterwards)."""
    if plan.write == "rewrite":
        write_atomic(path, plan.full_text)  # a new file: the old one is gone or was cut by someone else
    elif plan.write == "append" and plan.append_text:
        append_record(path, plan.append_text)


@dataclass(slots=True)
class _LivePart:
    kind: str
    text: str = ""
    part: Part | None = None  # a part shown whole (tool call, chart…), once finished
    opened: bool = False
    written: int = 0  # characters of ``text`` written
    done: bool = False


@dataclass(slots=True)
class LiveTail:
    """Appends the prompt being sent and the streaming reply to ``transcript.md`` in their final form.

    Each event becomes at most one write, so a reader never sees half a record. Parts are written in order: a
    part that does not stream (a tool call) is written once finished, and text of a later part waits for it.
    When the stream carried every part, the file then holds exactly the rendering of the final messages
    (headings aside: they show the server's time from the stream, and stand).
    """

    path: Path
    prompt: str | None = None  # written at agent_ready (the server stored it), or before anything else
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    on_chart: Callable[[str, int, ChartPart], object] | None = None  # draws a chart before its line is written
    _message: str | None = None
    _parts: dict[int, _LivePart] = field(default_factory=dict)
    _next: int = 0

    def _write(self, text: str) -> None:
        if text:
            append_record(self.path, text)
            killpoints.reached("transcript.live")

    def _prompt_text(self, when: datetime | None) -> str:
        if self.prompt is None:
            return ""
        text, self.prompt = self.prompt, None
        return heading("user", when or self.clock()) + render_part(TextPart("", text))

    def user_prompt(self, text: str, when: datetime) -> None:
        self.prompt = text
        self._write(self._prompt_text(when))

    def notice(self, label: str, lines: Sequence[str], when: datetime | None = None) -> None:
        """A failure or cancellation: the open message is finished first (what streamed stands)."""
        out = self._prompt_text(when) + self._finish()
        self._write(out + notice(label, when or self.clock(), lines))

    def on_event(self, event: object, now: datetime | None = None) -> None:
        if isinstance(event, StreamStarted):
            self._write(self._prompt_text(event.at))
        elif isinstance(event, MessageStarted):
            out = self._prompt_text(event.at) + self._finish()
            self._message = event.message_id
            self._write(out + heading("agent", event.at or now or self.clock()))
        elif isinstance(event, PartDelta) and event.message_id == self._message:
            part = self._parts.setdefault(event.index, _LivePart(event.kind))
            if part.part is None and not part.done:
                part.text += event.text
            self._write(self._flush())
        elif isinstance(event, PartFinished) and event.message_id == self._message:
            self._parts[event.index] = _LivePart("", part=event.part, done=True)
            self._write(self._flush())
        elif isinstance(event, MessageFinished) and event.message.message_id == self._message:
            for index, final in enumerate(event.message.content):
                found = self._parts.get(index)
                if found is None:
                    self._parts[index] = _LivePart("", part=final, done=True)
                else:
                    found.done = True
            self._write(self._finish())

    def _flush(self) -> str:
        """Everything that can be written now, in part order."""
        out: list[str] = []
        while (part := self._parts.get(self._next)) is not None:
            if part.part is not None:
                if isinstance(part.part, ChartPart) and self.on_chart is not None and self._message is not None:
                    self.on_chart(self._message, self._next, part.part)
                out.append(render_part(part.part, self._message or "", self._next))
                self._next += 1
                continue
            if not part.opened:
                out.append(part_prefix(part.kind))
                part.opened = True
            out.append(part.text[part.written :])
            part.written = len(part.text)
            if not (part.done or self._next + 1 in self._parts):
                break  # still streaming
            out.append(part_suffix(part.kind, part.text))
            self._next += 1
        return "".join(out)

    def _finish(self) -> str:
        """Close the open message: every part it announced is written as far as it got."""
        if self._message is None:
            return ""
        for part in self._parts.values():
            part.done = True
        out = self._flush()
        self._message, self._parts, self._next = None, {}, 0
        return out
