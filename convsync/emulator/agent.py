"""The scripted agent: a deterministic reply to every prompt, and slash commands that exercise the API.

The agent decides *what* to say and performs its side effects (files, frames, renames); ``run.py`` turns the
``Reply`` into the stream of JSON-Patch deltas. Every command is documented in docs/emulator.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from convsync.emulator import frames, wire
from convsync.emulator.store import (
    ConversationRow,
    FileRow,
    FrameRow,
    StagedFile,
    Store,
    file_ref_problem,
    guess_mime,
)

T = TypeVar("T")

_MIB = 1024 * 1024
_WRITE_BLOCK = 1024 * 1024


class Offload(Protocol):
    """Runs blocking work off the event loop."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


@dataclass(frozen=True, slots=True)
class Part:
    """One content part of the reply in its final form.

    ``stream_key`` names the string that arrives in chunks (``text``/``thought``); ``chunks`` fixes the
    chunking (else the emulator's chunk size applies) and ``delay`` the pause between this part's deltas.
    ``initial`` holds keys that change while the part is open: the first ``add`` carries these values, then
    each key gets a ``replace`` with its final value before the part completes.
    """

    body: dict[str, Any]
    stream_key: str | None = None
    chunks: tuple[str, ...] | None = None
    delay: float | None = None
    initial: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    parts: tuple[Part, ...] = ()
    rename: tuple[str, str] | None = None  # (old name, new name): emits thread_name_updated
    error: str | None = None  # emits agent_error instead of a message


def text_part(text: str, *, chunks: tuple[str, ...] | None = None, delay: float | None = None) -> Part:
    body = {"content_id": wire.new_id(), "kind": "text", "complete": True, "text": text, "citations": []}
    return Part(body, "text", chunks, delay)


def thought_part(thought: str) -> Part:
    body = {
        "content_id": wire.new_id(),
        "kind": "thought",
        "complete": True,
        "thought": thought,
        "extras": {},
    }
    return Part(body, "thought")


class ScriptedAgent:
    def __init__(self, store: Store, offload: Offload) -> None:
        self._store = store
        self._offload = offload

    async def respond(self, conversation: ConversationRow, prompt: str) -> Reply:
        command, rest = _first_word(prompt.strip())
        handler = self._commands().get(command) if command.startswith("/") else None
        if handler is None:
            return self._echo(conversation, prompt)
        return await handler(conversation, rest)

    def _commands(self) -> dict[str, Callable[[ConversationRow, str], Awaitable[Reply]]]:
        return {
            "/files": self._files,
            "/frame": self._frame,
            "/bigframe": self._bigframe,
            "/write": self._write,
            "/bigfile": self._bigfile,
            "/slow": self._slow,
            "/fail": self._fail,
            "/tool": self._tool,
            "/chart": self._chart,
            "/attach": self._attach,
            "/rename": self._rename,
        }

    # --- replies --------------------------------------------------------------------------------------------

    def _echo(self, conversation: ConversationRow, prompt: str) -> Reply:
        text = f"You said: {prompt}"
        files = self._store.files(conversation.id)
        if files:
            text += "\nFiles in this conversation: " + ", ".join(_describe(f) for f in files)
        return Reply((thought_part("Reading the request."), text_part(text)))

    async def _files(self, conversation: ConversationRow, _: str) -> Reply:
        files = self._store.files(conversation.id)
        if files:
            text = "Files in this conversation:\n" + "\n".join(f"- {_describe(f)}" for f in files)
        else:
            text = "No files in this conversation."
        return Reply((thought_part("Listing the conversation's files."), text_part(text)))

    async def _frame(self, conversation: ConversationRow, args: str) -> Reply:
        words = _split(args)
        thought = thought_part("Turning a file into a data frame.")
        if not words or len(words) > 2:
            return Reply((thought, text_part("Usage: /frame <file_ref> [<name>]")))
        source = self._store.file(conversation.id, words[0])
        if source is None:
            return Reply((thought, text_part(f"No file named {words[0]} in this conversation.")))
        name = words[1] if len(words) == 2 else _frame_name(source.file_ref)
        blob = self._store.blob_path(conversation.id, source.file_id)
        target = self._store.temp_path(".parquet")
        try:
            shape = await self._offload(lambda: frames.build_from_file(blob, source.file_ref, target))
        except frames.FrameSourceError as exc:
            target.unlink(missing_ok=True)
            return Reply((thought, text_part(f"Could not create a data frame: {exc}")))
        self._add_frame(conversation, name=name, shape=shape, parquet=target, source=source, input_id_type="file")
        return Reply((thought, text_part(f"Created data frame `{name}` from {source.file_ref}: " + _shape(shape))))

    async def _bigframe(self, conversation: ConversationRow, args: str) -> Reply:
        words = _split(args)
        thought = thought_part("Synthesising a data frame.")
        try:
            name, rows, columns = words[0], int(words[1]), int(words[2]) if len(words) > 2 else 5
        except (IndexError, ValueError):
            return Reply((thought, text_part("Usage: /bigframe <name> <rows> [<columns>]")))
        if rows < 0 or columns < 1:
            return Reply((thought, text_part("Rows must be >= 0 and columns >= 1.")))
        target = self._store.temp_path(".parquet")
        shape = await self._offload(lambda: frames.synthesize(target, rows, columns))
        self._add_frame(conversation, name=name, shape=shape, parquet=target, source=None, input_id_type="in_memory")
        return Reply((thought, text_part(f"Created data frame `{name}`: " + _shape(shape))))

    def _add_frame(
        self,
        conversation: ConversationRow,
        *,
        name: str,
        shape: frames.FrameShape,
        parquet: Path,
        source: FileRow | None,
        input_id_type: str,
    ) -> None:
        row = FrameRow(
            conversation.id,
            name,
            wire.new_id(),
            shape.num_rows,
            shape.column_headers,
            wire.now(),
            input_id_type,
            source.file_id if source else None,
            source.file_ref if source else None,
            None,
        )
        self._store.add_frame(row, parquet)

    async def _write(self, conversation: ConversationRow, args: str) -> Reply:
        name, text = _first_word(args)
        thought = thought_part("Writing a file.")
        problem = file_ref_problem(name)
        if problem:
            return Reply((thought, text_part(f"Cannot write the file: {problem}")))
        row = await self._produce(conversation, name, lambda out: _write_text(out, text))
        return Reply((thought, text_part(f"Wrote {row.file_ref} ({row.file_size_raw} bytes).")))

    async def _bigfile(self, conversation: ConversationRow, args: str) -> Reply:
        words = _split(args)
        thought = thought_part("Writing a large file.")
        try:
            name, size = words[0], int(float(words[1]) * _MIB)
        except (IndexError, ValueError):
            return Reply((thought, text_part("Usage: /bigfile <filename> <MiB>")))
        problem = file_ref_problem(name) or ("Size must be >= 0" if size < 0 else None)
        if problem:
            return Reply((thought, text_part(f"Cannot write the file: {problem}")))
        row = await self._produce(conversation, name, lambda out: _write_pattern(out, size))
        return Reply((thought, text_part(f"Wrote {row.file_ref} ({row.file_size_raw} bytes).")))

    async def _produce(
        self, conversation: ConversationRow, name: str, write: Callable[[Path], tuple[str, int]]
    ) -> FileRow:
        """Writes an output file into the conversation's file space (replacing one of the same name)."""
        target = self._store.temp_path()
        digest, size = await self._offload(lambda: write(target))
        staged = StagedFile(name, target, digest, size, guess_mime(name))
        return self._store.commit_files(conversation, [staged])[0]

    async def _slow(self, _: ConversationRow, args: str) -> Reply:
        words = _split(args)
        try:
            count, delay_ms = int(words[0]), float(words[1])
        except (IndexError, ValueError):
            return Reply((thought_part("Reading the request."), text_part("Usage: /slow <chunks> <delay_ms>")))
        count = max(count, 1)
        chunks = tuple(f"Part {i + 1} of {count}. " for i in range(count))
        return Reply(
            (
                thought_part("Taking my time."),
                text_part("".join(chunks), chunks=chunks, delay=delay_ms / 1000),
            )
        )

    async def _fail(self, _: ConversationRow, __: str) -> Reply:
        return Reply(error="The agent failed on purpose (/fail).")

    async def _tool(self, _: ConversationRow, __: str) -> Reply:
        stamp = wire.sse_time(wire.now())
        body = {
            "content_id": wire.new_id(),
            "kind": "tool_call",
            "complete": True,
            "name": "get_weather",
            "tool_call_id": wire.new_id(),
            "arguments_raw": json.dumps({"city": "Oslo"}),
            "sub_type": "action-external",
            "status": "finished",
            "result": json.dumps({"temperature_c": 21}),
            "error": None,
            "discovered_at": stamp,
            "pending_at": stamp,
            "started_at": stamp,
            "ended_at": stamp,
            "action_server_run_id": wire.new_id(),
            "metadata": {},
        }
        tool = Part(body, initial={"status": "running", "result": None})
        answer = text_part("The tool says it is 21 °C in Oslo.")
        return Reply((thought_part("Calling a tool."), tool, answer))

    async def _chart(self, _: ConversationRow, __: str) -> Reply:
        spec = {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "data": {"values": [{"x": "a", "y": 1}, {"x": "b", "y": 3}, {"x": "c", "y": 2}]},
            "mark": "bar",
            "encoding": {"x": {"field": "x", "type": "nominal"}, "y": {"field": "y", "type": "quantitative"}},
        }
        body = {
            "content_id": wire.new_id(),
            "kind": "vega_chart",
            "complete": True,
            "chart_spec_raw": json.dumps(spec),
            "sub_type": "vega-lite",
            "completed": True,
            "widget_id": wire.new_id(),
            "description": "A bar chart",
            "status": "done",
            "thinking": "",
            "error": None,
            "_chart_spec": spec,
        }
        chart = Part(body, initial={"status": "generating", "completed": False})
        return Reply((thought_part("Drawing a chart."), chart, text_part("Here is a chart.")))

    async def _attach(self, conversation: ConversationRow, args: str) -> Reply:
        words = _split(args)
        thought = thought_part("Attaching a file.")
        source = self._store.file(conversation.id, words[0]) if len(words) == 1 else None
        if source is None:
            return Reply((thought, text_part(f"No file named {args} in this conversation.")))
        body = {
            "content_id": wire.new_id(),
            "kind": "attachment",
            "complete": True,
            "name": source.file_ref,
            "mime_type": source.mime_type,
            "description": f"The file {source.file_ref}",
            "uri": f"agent-server-file://{source.file_id}",
            "base64_data": None,
        }
        return Reply((thought, Part(body), text_part(f"Attached {source.file_ref}.")))

    async def _rename(self, conversation: ConversationRow, args: str) -> Reply:
        thought = thought_part("Renaming the conversation.")
        if not args:
            return Reply((thought, text_part("Usage: /rename <name>")))
        self._store.rename_conversation(conversation.id, args)
        return Reply((thought, text_part(f"Renamed the conversation to {args}.")), rename=(conversation.name, args))


def auto_title(prompt: str) -> str:
    """The name the server gives a conversation after its first synchronous run: Title Case, <= 80 chars."""
    words = "".join(c if c.isalnum() else " " for c in prompt).split()[:12]
    title = ""
    for word in words:
        candidate = f"{title} {word[:1].upper()}{word[1:]}".strip()
        if len(candidate) > 80:
            break
        title = candidate
    return title or "New Conversation"


def _describe(row: FileRow) -> str:
    return f"{row.file_ref} ({row.file_size_raw} bytes)"


def _shape(shape: frames.FrameShape) -> str:
    return f"{shape.num_rows} rows x {len(shape.column_headers)} columns ({', '.join(shape.column_headers)})."


def _first_word(text: str) -> tuple[str, str]:
    """The first word and the rest after the one whitespace character that ends it (kept verbatim)."""
    match = re.match(r"(\S*)\s?(.*)", text, re.DOTALL)
    assert match is not None
    return match.group(1), match.group(2)


def _split(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _frame_name(file_ref: str) -> str:
    """A data-frame name from a file stem: letters, digits and ``_`` (explicit names are taken verbatim)."""
    stem = Path(file_ref).stem
    return "".join(c if c.isalnum() else "_" for c in stem) or "data_frame"


def _write_text(target: Path, text: str) -> tuple[str, int]:
    data = text.encode()
    target.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def _write_pattern(target: Path, size: int) -> tuple[str, int]:
    """Deterministic bytes, written block by block: each 1 MiB block is numbered, then a fixed pattern."""
    pattern = bytes(range(256)) * (_WRITE_BLOCK // 256)
    digest = hashlib.sha256()
    written = 0
    with target.open("wb") as out:
        index = 0
        while written < size:
            header = f"convsync bigfile block {index:010d}\n".encode()
            block = (header + pattern)[: min(_WRITE_BLOCK, size - written)]
            out.write(block)
            digest.update(block)
            written += len(block)
            index += 1
    return digest.hexdigest(), written
