"""The reply stream of ``POST …/stream`` (spec §4): SSE framing, JSON-Patch deltas, typed events.

Pure code, fed what the transport received, so every edge case is testable without a server:

- :func:`sse_lines` splits raw chunks (``bytes`` or ``str``, cut anywhere) into lines; ``\\r\\n``,
  ``\\n`` and a lone ``\\r`` all end a line, as the SSE standard says.
- :func:`sse_events` turns lines into :class:`SseEvent` values (comments such as ``: ping`` are skipped).
- :func:`apply_delta` applies one RFC 6902 operation, or the server's ``concat_string``/``inc``, to a
  JSON value.
- :class:`StreamAssembler` rebuilds each message from its deltas and hands out typed events: text as it
  arrives (:class:`PartDelta`) and the server's final message (:class:`MessageFinished`, the truth).
- :func:`stream_events` is the whole pipeline; it raises ``StreamInterrupted`` when the input ends before
  ``agent_finished``.

What cannot be understood never ends the stream: closing it would make the server cancel the run, and the
reply would be lost (spec §3.8). An unknown op or a path that does not fit stops the live text of that message
only; its ``message_end`` (or, failing that, the messages the caller reads after ``agent_finished``) still
brings the whole message.
"""

from __future__ import annotations

import codecs
import copy
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from convsync.api.models import (
    AgentFailed,
    Message,
    MessageFinished,
    MessageStarted,
    PartDelta,
    PartFinished,
    StreamEvent,
    StreamFinished,
    StreamStarted,
    ThreadRenamed,
    parse_part,
    parse_time,
)
from convsync.errors import ProtocolError, StreamInterrupted

log = logging.getLogger(__name__)

# --- SSE framing --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event: its ``event`` name (default ``message``) and joined ``data``."""

    event: str
    data: str
    id: str | None = None


def sse_lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """The lines of an SSE body, without their terminators, whatever the chunk boundaries.

    A final line without a terminator is still yielded: a cut stream is noticed one level up, by the missing
    ``agent_finished``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    partial: list[str] = []  # pieces of the line not yet terminated
    pending_cr = False  # the last chunk ended in "\r": a "\n" starting the next one belongs to it
    for chunk in chunks:
        text = decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            continue
        if pending_cr and text.startswith("\n"):
            text = text[1:]
        pending_cr = text.endswith("\r")
        pieces = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(pieces) == 1:
            partial.append(pieces[0])
            continue
        partial.append(pieces[0])
        yield "".join(partial)
        yield from pieces[1:-1]
        partial = [pieces[-1]] if pieces[-1] else []
    rest = "".join(partial) + decoder.decode(b"", final=True)
    if rest:
        yield rest


def sse_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Dispatch events from SSE lines (WHATWG rules: ``field: value``, blank line ends an event).

    Comments (lines starting with ``:``, e.g. the server's ``: ping - …`` keep-alives) and unknown fields are
    ignored; an event without any ``data`` line is not dispatched. An event that the input cuts off before its
    blank line is dropped, like a browser does.
    """
    event = ""
    data: list[str] = []
    has_data = False
    last_id: str | None = None
    for line in lines:
        if not line:
            if has_data:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
            has_data = True
        elif name == "id" and "\0" not in value:
            last_id = value


# --- JSON Patch ---------------------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    """The reference tokens of a JSON Pointer (RFC 6901); ``""`` is the whole document."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise ProtocolError(f"bad JSON pointer {path!r} in a stream delta")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], step: str, *, for_insert: bool) -> int:
    if step == "-" and for_insert:
        return len(container)
    # isascii: "²" and other Unicode digits pass isdigit() but not int().
    if not (step.isascii() and step.isdigit()) or (len(step) > 1 and step.startswith("0")):
        raise ProtocolError(f"bad array index {step!r} in a stream delta")
    index = int(step)
    limit = len(container) if for_insert else len(container) - 1
    if index > limit:
        raise ProtocolError(f"array index {index} out of range in a stream delta")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise ProtocolError(f"path element {token!r} missing in a stream delta")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_insert=False)]
        else:
            raise ProtocolError(f"cannot descend into {type(node).__name__} in a stream delta")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ProtocolError(f"path element {last!r} missing in a stream delta")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_insert=False)]
    raise ProtocolError(f"cannot read from {type(parent).__name__} in a stream delta")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_insert=True), value)
    else:
        raise ProtocolError(f"cannot add to {type(parent).__name__} in a stream delta")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    """Remove the value at ``tokens``; return (new document, removed value)."""
    if not tokens:
        return None, doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ProtocolError(f"path element {last!r} missing in a stream delta")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, for_insert=False))
    raise ProtocolError(f"cannot remove from {type(parent).__name__} in a stream delta")


def _set(doc: Any, tokens: list[str], value: Any) -> Any:
    """Overwrite an existing location (``replace``, ``concat_string``, ``inc``)."""
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ProtocolError(f"path element {last!r} missing in a stream delta")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_index(parent, last, for_insert=False)] = value
    else:
        raise ProtocolError(f"cannot replace in {type(parent).__name__} in a stream delta")
    return doc


def apply_delta(doc: Any, delta: Any) -> Any:
    """Apply one delta to ``doc`` (mutated in place where possible) and return the resulting document.

    ``op`` is an RFC 6902 operation (``add``, ``remove``, ``replace``, ``move``, ``copy``, ``test``) or one of
    the server's own: ``concat_string`` appends ``value`` to the string at ``path`` (a missing key starts
    empty), ``inc`` adds a number. The source of ``move``/``copy`` may be spelled ``from`` or ``from_``
    (pydantic's dump).
    The delta's ``value`` becomes part of the document (not copied): pass freshly decoded JSON.
    """
    if not isinstance(delta, dict):
        raise ProtocolError(f"stream delta must be an object, got {type(delta).__name__}")
    op = delta.get("op")
    path = delta.get("path")
    if not isinstance(op, str) or not isinstance(path, str):
        raise ProtocolError("stream delta needs string 'op' and 'path'")
    tokens = _pointer(path)
    value = delta.get("value")
    if op == "add":
        return _add(doc, tokens, value)
    if op == "replace":
        return _set(doc, tokens, value)
    if op == "remove":
        return _remove(doc, tokens)[0]
    if op in ("move", "copy"):
        source = delta.get("from", delta.get("from_"))
        if not isinstance(source, str):
            raise ProtocolError(f"stream delta {op!r} needs a 'from' pointer")
        from_tokens = _pointer(source)
        if op == "move":
            doc, moved = _remove(doc, from_tokens)
            return _add(doc, tokens, moved)
        return _add(doc, tokens, copy.deepcopy(_get(doc, from_tokens)))
    if op == "test":
        if _get(doc, tokens) != value:
            raise ProtocolError(f"stream delta 'test' failed at {path!r}")
        return doc
    if op == "concat_string":
        current = _get_or_none(doc, tokens)
        if current is None:
            current = ""
        if not isinstance(current, str) or not isinstance(value, str):
            raise ProtocolError(f"concat_string needs strings at {path!r}")
        if tokens and isinstance(_parent(doc, tokens), dict):
            return _add(doc, tokens, current + value)
        return _set(doc, tokens, current + value)
    if op == "inc":
        number = _get_or_none(doc, tokens)
        if number is None:
            number = 0
        if not _is_number(number) or not _is_number(value):
            raise ProtocolError(f"inc needs numbers at {path!r}")
        if tokens and isinstance(_parent(doc, tokens), dict):
            return _add(doc, tokens, number + value)
        return _set(doc, tokens, number + value)
    raise ProtocolError(f"unknown stream delta op {op!r}")


def _get_or_none(doc: Any, tokens: list[str]) -> Any:
    if tokens:
        parent = _parent(doc, tokens)
        if isinstance(parent, dict) and tokens[-1] not in parent:
            return None
    return _get(doc, tokens)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- typed events -------------------------------------------------------------------------------------------

# Which key of a content part holds its streamed text, per kind.
TEXT_KEYS = {"text": "text", "formatted-text": "text", "thought": "thought"}


@dataclass(slots=True)
class _PartProgress:
    content_id: str
    kind: str
    sent: str  # the text already handed out as PartDelta


@dataclass(slots=True)
class StreamAssembler:
    """Turns decoded SSE events into :data:`StreamEvent` values, rebuilding messages from their deltas.

    ``messages`` maps ``message_id`` to the message object rebuilt from the deltas so far (a dict, as on the
    wire); ``stalled`` holds the ids of messages whose deltas could not be applied: their later deltas are
    skipped, and only their ``message_end`` is used. Text deltas are computed by comparing each text-bearing
    part with what was already handed out, so any patch op that grows a text (``concat_string``, ``add`` of a
    whole part or content list, ``replace``) is reported once. Should the server rewrite text already handed
    out, no delta is produced for it; the :class:`MessageFinished` event carries the final text regardless.
    """

    messages: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    stalled: set[str] = field(default_factory=set)
    _progress: dict[str, list[_PartProgress]] = field(default_factory=dict)
    _finished: dict[str, set[int]] = field(default_factory=dict)  # non-text parts handed out, per message

    def feed(self, sse: SseEvent) -> Iterator[StreamEvent]:
        if sse.event not in ("agent_ready", "agent_event", "message"):
            return
        try:
            payload = json.loads(sse.data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            log.debug("skipping a stream event whose data is not a JSON object: %r", sse.data[:80])
            return
        kind = payload.get("event_type") or ("agent_ready" if sse.event == "agent_ready" else "")
        message_id = _text(payload.get("message_id"))
        if kind == "agent_ready":
            run_id, thread_id = _text(payload.get("run_id")), _text(payload.get("thread_id"))
            yield StreamStarted(run_id=run_id, thread_id=thread_id, at=parse_time(payload.get("timestamp")))
        elif kind == "message_begin":
            self.messages[message_id] = {"message_id": message_id}
            self._progress[message_id] = []
            yield MessageStarted(message_id, at=parse_time(payload.get("timestamp")))
        elif kind == "message_content":
            yield from self._content(message_id, payload.get("delta"))
        elif kind == "message_end":
            yield from self._end(message_id, payload.get("data"))
        elif kind == "thread_name_updated":
            yield ThreadRenamed(new_name=_text(payload.get("new_name")), old_name=_text(payload.get("old_name")))
        elif kind == "agent_error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {"message": error}
            yield AgentFailed(code=_text(error.get("code")), message=_text(error.get("message")))
        elif kind == "agent_finished":
            self.finished = True
            yield StreamFinished(run_id=_text(payload.get("run_id")))
        # Anything else (request_tool_execution, future event types) carries nothing to mirror.

    def _content(self, message_id: str, delta: Any) -> Iterator[StreamEvent]:
        if message_id not in self.messages:  # a server that skipped message_begin: be liberal
            self.messages[message_id] = {"message_id": message_id}
            self._progress[message_id] = []
            yield MessageStarted(message_id)
        if message_id in self.stalled:
            return
        try:
            self.messages[message_id] = apply_delta(self.messages[message_id], delta)
        except ProtocolError as exc:
            self.stalled.add(message_id)
            log.debug("message %s is no longer shown live (%s); waiting for its end", message_id, exc)
            return
        yield from self._text_deltas(message_id, self.messages[message_id])

    def _end(self, message_id: str, data: Any) -> Iterator[StreamEvent]:
        if isinstance(data, dict) and data:
            final = data
        else:
            final = self.messages.get(message_id, {})
            # A delta may have replaced or removed the whole message ("path": ""): nothing to finish it from.
            if message_id in self.stalled or not isinstance(final, dict):
                log.debug("message %s ended without its data; it is read from the server", message_id)
                return
        final = {"message_id": message_id, **final} if message_id else final
        try:
            message = Message.from_wire(final)
        except ProtocolError as exc:
            log.debug("the end of message %s is unusable (%s); it is read from the server", message_id, exc)
            return
        if message_id not in self._progress:
            self._progress[message_id] = []
            yield MessageStarted(message_id)
        # Text the deltas missed (e.g. the last chunk only in message_end) is handed out before the truth.
        yield from self._text_deltas(message_id, final, ending=True)
        yield MessageFinished(message)

    def _text_deltas(self, message_id: str, message: Any, *, ending: bool = False) -> Iterator[StreamEvent]:
        """Text that grew since the last call, and parts of other kinds once complete (or at ``ending``)."""
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return
        progress = self._progress.setdefault(message_id, [])
        announced = self._finished.setdefault(message_id, set())
        for index, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = _text(part.get("kind"))
            key = TEXT_KEYS.get(kind)
            if key is None:
                # Shown whole, in its final form, so the transcript's live tail is its final text.
                if index not in announced and (ending or part.get("complete") is True):
                    announced.add(index)
                    yield PartFinished(message_id, index, parse_part(part))
                continue
            text = part.get(key)
            text = text if isinstance(text, str) else ""
            content_id = _text(part.get("content_id"))
            while len(progress) <= index:
                progress.append(_PartProgress("", "", ""))
            seen = progress[index]
            if not seen.kind or (seen.content_id and content_id and seen.content_id != content_id):
                progress[index] = _PartProgress(content_id, kind, text)
                yield PartDelta(message_id, index, kind, text)
            elif len(text) > len(seen.sent) and text.startswith(seen.sent):
                yield PartDelta(message_id, index, kind, text[len(seen.sent) :])
                seen.sent = text


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def stream_events(chunks: Iterable[bytes | str]) -> Iterator[StreamEvent]:
    """Typed events from the raw body of a reply stream, ending with :class:`StreamFinished`.

    Raises ``StreamInterrupted`` when the body ends before ``agent_finished``; events that are not what the
    spec describes are skipped (see the module docstring). Nothing after ``agent_finished`` is read.
    """
    assembler = StreamAssembler()
    for sse in sse_events(sse_lines(chunks)):
        yield from assembler.feed(sse)
        if assembler.finished:
            return
    raise StreamInterrupted("the reply stream ended before agent_finished")
