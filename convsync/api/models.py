"""Wire objects of the Agent API as frozen dataclasses: dicts stop here.

Parsing is liberal (spec "rules of thumb"): unknown keys are ignored, missing optional keys get defaults,
timestamps may end in ``Z`` or ``+00:00``. A missing *required* key or a wrong type raises ``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from convsync.errors import ProtocolError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- field readers ------------------------------------------------------------------------------------------


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what json.loads makes: skips the ABC check, ~5x slower, on every message part
        return value
    if not isinstance(value, Mapping):
        raise ProtocolError(f"expected an object for {what}, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: key {key!r} must be a string, got {type(value).__name__}")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    return str(value)


def _int(obj: Mapping[str, Any], key: str, what: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if default is not None and value is None:
            return default
        raise ProtocolError(f"{what}: key {key!r} must be an integer, got {type(value).__name__}")
    return value


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp with ``Z``, ``+00:00`` or no zone (taken as UTC); ``None`` if absent/garbled."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# --- agents and conversations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    description: str = ""
    mode: str | None = None

    @classmethod
    def from_wire(cls, data: Any) -> Agent:
        obj = _obj(data, "agent")
        return cls(
            id=_str(obj, "id", "agent"),
            name=_opt_str(obj, "name") or "",
            description=_opt_str(obj, "description") or "",
            mode=_opt_str(obj, "mode"),
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    name: str
    agent_id: str
    # Not in the public object (spec 2.2): a server that adds it gives a change hint (convsync.mirror.hints).
    # Absent, null or unreadable: None.
    updated_at: datetime | None = None

    @classmethod
    def from_wire(cls, data: Any, agent_id: str | None = None) -> Conversation:
        obj = _obj(data, "conversation")
        return cls(
            id=_str(obj, "id", "conversation"),
            name=_opt_str(obj, "name") or "",
            agent_id=_opt_str(obj, "agent_id") or agent_id or "",
            updated_at=parse_time(obj.get("updated_at")),
        )


# --- message content ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    """``text`` and ``formatted-text`` parts: what the agent says."""

    content_id: str
    text: str
    kind: str = "text"
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ThoughtPart:
    content_id: str
    thought: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    content_id: str
    name: str
    tool_call_id: str = ""
    arguments_raw: str = ""
    status: str = ""
    result: str | None = None
    error: str | None = None
    complete: bool = True


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    content_id: str
    name: str
    mime_type: str = ""
    uri: str = ""
    description: str = ""
    complete: bool = True


@dataclass(frozen=True, slots=True)
class QuickActionsPart:
    content_id: str
    actions: tuple[tuple[str, str], ...] = ()  # (label, value)
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ChartPart:
    content_id: str
    chart_spec_raw: str = ""
    sub_type: str = "vega-lite"
    description: str = ""
    complete: bool = True


@dataclass(frozen=True, slots=True)
class OtherPart:
    """A kind this client does not know yet; kept so that nothing the server said disappears silently."""

    content_id: str
    kind: str
    complete: bool = True


Part = TextPart | ThoughtPart | ToolCallPart | AttachmentPart | QuickActionsPart | ChartPart | OtherPart


def _error_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def parse_part(data: Any) -> Part:
    obj = _obj(data, "content part")
    kind = _opt_str(obj, "kind") or ""
    cid = _opt_str(obj, "content_id") or ""
    complete = bool(obj.get("complete", True))
    if kind in ("text", "formatted-text"):
        return TextPart(cid, _opt_str(obj, "text") or "", kind, complete)
    if kind == "thought":
        return ThoughtPart(cid, _opt_str(obj, "thought") or "", complete)
    if kind == "tool_call":
        return ToolCallPart(
            cid,
            name=_opt_str(obj, "name") or "",
            tool_call_id=_opt_str(obj, "tool_call_id") or "",
            arguments_raw=_opt_str(obj, "arguments_raw") or "",
            status=_opt_str(obj, "status") or "",
            result=_opt_str(obj, "result"),
            error=_error_text(obj.get("error")),
            complete=complete,
        )
    if kind == "attachment":
        return AttachmentPart(
            cid,
            name=_opt_str(obj, "name") or "",
            mime_type=_opt_str(obj, "mime_type") or "",
            uri=_opt_str(obj, "uri") or "",
            description=_opt_str(obj, "description") or "",
            complete=complete,
        )
    if kind == "quick_actions":
        actions = obj.get("actions") or []
        pairs = tuple(
            (_opt_str(a, "label") or "", _opt_str(a, "value") or "") for a in actions if isinstance(a, Mapping)
        )
        return QuickActionsPart(cid, pairs, complete)
    if kind == "vega_chart":
        return ChartPart(
            cid,
            chart_spec_raw=_opt_str(obj, "chart_spec_raw") or "",
            sub_type=_opt_str(obj, "sub_type") or "vega-lite",
            description=_opt_str(obj, "description") or "",
            complete=complete,
        )
    return OtherPart(cid, kind, complete)


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    role: str  # "user" | "agent"
    content: tuple[Part, ...]
    created_at: datetime = EPOCH
    complete: bool = True
    parent_run_id: str | None = None

    @property
    def text(self) -> str:
        """The message's answer text: its ``text``/``formatted-text`` parts joined (spec §2.4)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @classmethod
    def from_wire(cls, data: Any) -> Message:
        obj = _obj(data, "message")
        raw_content = obj.get("content")
        if raw_content is None:  # missing or null: no parts
            raw_content = []
        if isinstance(raw_content, str):  # liberal: a plain string is one text part
            raw_content = [{"kind": "text", "text": raw_content}]
        if type(raw_content) is not list and not isinstance(raw_content, Sequence):
            raise ProtocolError("message: 'content' must be a list of parts")
        return cls(
            message_id=_str(obj, "message_id", "message"),
            role=_opt_str(obj, "role") or "agent",
            content=tuple(parse_part(p) for p in raw_content),
            created_at=parse_time(obj.get("created_at")) or EPOCH,
            complete=bool(obj.get("complete", True)),
            parent_run_id=_opt_str(obj, "parent_run_id"),
        )


# --- files and data frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteFile:
    file_ref: str
    file_id: str = ""
    size: int = 0
    mime_type: str = "application/octet-stream"
    sha256: str | None = None
    created_at: datetime | None = None

    @classmethod
    def from_wire(cls, data: Any) -> RemoteFile:
        obj = _obj(data, "file")
        size = obj.get("file_size_raw")
        return cls(
            file_ref=_str(obj, "file_ref", "file"),
            file_id=_opt_str(obj, "file_id") or "",
            size=size if isinstance(size, int) and not isinstance(size, bool) else 0,
            mime_type=_opt_str(obj, "mime_type") or "application/octet-stream",
            sha256=(_opt_str(obj, "file_hash") or None),
            created_at=parse_time(obj.get("created_at")),
        )


@dataclass(frozen=True, slots=True)
class DataFrameInfo:
    name: str
    data_frame_id: str = ""
    num_rows: int = 0
    num_columns: int = 0
    column_headers: tuple[str, ...] = ()
    sample_rows: tuple[tuple[Any, ...], ...] = field(default=())
    created_at: datetime | None = None
    input_id_type: str = ""
    file_ref: str | None = None
    description: str | None = None

    @classmethod
    def from_wire(cls, data: Any) -> DataFrameInfo:
        obj = _obj(data, "data frame")
        headers = obj.get("column_headers") or []
        samples = obj.get("sample_rows") or []
        return cls(
            name=_str(obj, "name", "data frame"),
            data_frame_id=_opt_str(obj, "data_frame_id") or "",
            num_rows=_int(obj, "num_rows", "data frame", default=0),
            num_columns=_int(obj, "num_columns", "data frame", default=0),
            column_headers=tuple(str(h) for h in headers),
            sample_rows=tuple(tuple(r) for r in samples if isinstance(r, Sequence)),
            created_at=parse_time(obj.get("created_at")),
            input_id_type=_opt_str(obj, "input_id_type") or "",
            file_ref=_opt_str(obj, "file_ref"),
            description=_opt_str(obj, "description"),
        )


# --- stream events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """``agent_ready``: the server stored the prompt and started the run."""

    run_id: str
    thread_id: str
    at: datetime | None = None  # the server's time of the event, when it says


@dataclass(frozen=True, slots=True)
class MessageStarted:
    message_id: str
    at: datetime | None = None  # the server's time of the event, when it says


@dataclass(frozen=True, slots=True)
class PartFinished:
    """A part that does not stream as text (tool call, chart, attachment…) is complete: its final form."""

    message_id: str
    index: int
    part: Part


@dataclass(frozen=True, slots=True)
class PartDelta:
    """Text appended to part ``index`` of message ``message_id`` (``kind`` is ``text``/``thought``/…).

    ``text`` is only the new characters. A part is announced by a first delta carrying its opening text
    (possibly empty).
    """

    message_id: str
    index: int
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class MessageFinished:
    """``message_end``: ``message`` is the server's final version, the truth for the transcript."""

    message: Message


@dataclass(frozen=True, slots=True)
class ThreadRenamed:
    new_name: str
    old_name: str


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """``agent_error``: the run failed on the server; ``agent_finished`` still follows."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """``agent_finished``: always the last event."""

    run_id: str


StreamEvent = (
    StreamStarted
    | MessageStarted
    | PartDelta
    | PartFinished
    | MessageFinished
    | ThreadRenamed
    | AgentFailed
    | StreamFinished
)
