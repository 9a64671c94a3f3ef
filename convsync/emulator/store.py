"""The emulator's state: metadata in SQLite, file blobs and data frames (Parquet) on disk.

One store per emulator, shared by the server's event loop and the test thread (in-process accessors), so every
access takes the lock. Layout under the root::

    emulator.sqlite3
    blobs/<conversation id>/<file id>          uploaded and agent-written files
    frames/<conversation id>/<frame id>.parquet
    tmp/                                        uploads and frame writes in progress
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from convsync.emulator import wire

SCHEMA_VERSION = 1

# Only Python's built-in table (no /etc/mime.types), so every machine guesses alike; plus common extras.
_MIME = mimetypes.MimeTypes()
_EXTRA_MIME = {
    ".md": "text/markdown",
    ".parquet": "application/vnd.apache.parquet",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
}


def guess_mime(file_ref: str) -> str:
    """The content type a file gets from its name, ``application/octet-stream`` when unknown."""
    suffix = Path(file_ref).suffix.lower()
    return _EXTRA_MIME.get(suffix) or _MIME.guess_type("x" + suffix)[0] or "application/octet-stream"


def file_ref_problem(file_ref: str) -> str | None:
    """Why a name cannot be a file of a conversation (the server's upload validation), or ``None``."""
    if not file_ref:
        return "File name must not be empty"
    if file_ref in (".", ".."):
        return f"Invalid file name: {file_ref}"
    if "/" in file_ref or "\x00" in file_ref:
        return f"Invalid characters in file name: {file_ref!r}"
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    mode TEXT NOT NULL, hidden INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, agent_id TEXT NOT NULL, name TEXT NOT NULL,
    user_named INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, message_id TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, file_ref TEXT NOT NULL, file_id TEXT NOT NULL,
    file_hash TEXT NOT NULL, file_size_raw INTEGER NOT NULL, mime_type TEXT NOT NULL,
    created_at TEXT NOT NULL, agent_id TEXT NOT NULL, UNIQUE (conversation_id, file_ref)
);
CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, name TEXT NOT NULL, data_frame_id TEXT NOT NULL,
    num_rows INTEGER NOT NULL, column_headers TEXT NOT NULL, created_at TEXT NOT NULL,
    input_id_type TEXT NOT NULL, file_id TEXT, file_ref TEXT, description TEXT,
    UNIQUE (conversation_id, name)
);
"""


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: str
    name: str
    description: str
    mode: str
    hidden: bool
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        """The union of the 2.2.x ``AgentCompat`` and the v2.5 ``PublicAgent`` (spec 2.3)."""
        stamp = wire.rest_time(self.created_at)
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "mode": self.mode,
            "runbook_text": "",
            "state": "live",
            "version": "1.0.0",
            "live_version_id": wire.stable_id("version:" + self.id),
            "architecture_name": "agent_platform.architectures.default",
            "architecture_version": "1.0.0",
            "created_by": "emulator",
            "created_at": stamp,
            "updated_at": stamp,
        }


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    agent_id: str
    name: str
    user_named: bool
    created_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "agent_id": self.agent_id}


@dataclass(frozen=True, slots=True)
class FileRow:
    conversation_id: str
    file_ref: str
    file_id: str
    file_hash: str
    file_size_raw: int
    mime_type: str
    created_at: datetime
    agent_id: str

    def to_wire(self, blob: Path, user_id: str) -> dict[str, Any]:
        """The private ``UploadedFile`` shape (spec 3.9)."""
        return {
            "file_id": self.file_id,
            "file_path": blob.as_uri(),
            "file_ref": self.file_ref,
            "file_hash": self.file_hash,
            "file_size_raw": self.file_size_raw,
            "mime_type": self.mime_type,
            "created_at": wire.rest_time(self.created_at),
            "embedded": False,
            "file_path_expiration": None,
            "agent_id": self.agent_id,
            "thread_id": self.conversation_id,
            "user_id": user_id,
            "file_url": None,
            "work_item_id": None,
            "scenario_id": None,
        }


@dataclass(frozen=True, slots=True)
class FrameRow:
    conversation_id: str
    name: str
    data_frame_id: str
    num_rows: int
    column_headers: tuple[str, ...]
    created_at: datetime
    input_id_type: str  # file | sql_computation | in_memory
    file_id: str | None
    file_ref: str | None
    description: str | None

    def to_wire(self, sample_rows: list[list[Any]]) -> dict[str, Any]:
        return {
            "data_frame_id": self.data_frame_id,
            "thread_id": self.conversation_id,
            "name": self.name,
            "sheet_name": None,
            "description": self.description,
            "num_rows": self.num_rows,
            "num_columns": len(self.column_headers),
            "created_at": wire.rest_time(self.created_at),
            "column_headers": list(self.column_headers),
            "sample_rows": sample_rows,
            "input_id_type": self.input_id_type,
            "parent_data_frame_ids": [],
            "file_id": self.file_id,
            "file_ref": self.file_ref,
            "sql_dialect": None,
            "sql_query": None,
        }


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A file fully written to ``tmp/`` and hashed, waiting to be committed under ``file_ref``."""

    file_ref: str
    path: Path
    file_hash: str
    size: int
    mime_type: str


class Store:
    def __init__(self, root: Path, *, durable: bool) -> None:
        self.root = root
        for sub in ("blobs", "frames", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "emulator.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if durable:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        else:
            self._db.execute("PRAGMA synchronous=OFF")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{root}: emulator state has schema version {version}, expected {SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Leftovers of uploads that were in progress when the emulator stopped.
        for leftover in (root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # --- agents ---------------------------------------------------------------------------------------------

    def add_agent(
        self, name: str, *, mode: str, description: str, hidden: bool = False, agent_id: str | None = None
    ) -> AgentRow:
        row = AgentRow(agent_id or wire.new_id(), name, description, mode, hidden, wire.now())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO agents (id, name, description, mode, hidden, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (row.id, name, description, mode, int(hidden), row.created_at.isoformat()),
            )
        return row

    def agent(self, agent_id: str) -> AgentRow | None:
        rows = self._query("SELECT * FROM agents WHERE id = ?", (agent_id,))
        return _agent(rows[0]) if rows else None

    def agents(self, *, include_hidden: bool = False) -> list[AgentRow]:
        rows = [_agent(r) for r in self._query("SELECT * FROM agents ORDER BY seq")]
        return [a for a in rows if include_hidden or not a.hidden]

    # --- conversations --------------------------------------------------------------------------------------

    def create_conversation(self, agent_id: str, name: str) -> ConversationRow:
        row = ConversationRow(wire.new_id(), agent_id, name, bool(name), wire.now())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO conversations (id, agent_id, name, user_named, created_at) VALUES (?, ?, ?, ?, ?)",
                (row.id, agent_id, name, int(row.user_named), row.created_at.isoformat()),
            )
        return row

    def conversation(self, conversation_id: str) -> ConversationRow | None:
        rows = self._query("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return _conversation(rows[0]) if rows else None

    def conversations(self, agent_id: str) -> list[ConversationRow]:
        """Newest first, as the server's ``ORDER BY created_at DESC``."""
        rows = self._query("SELECT * FROM conversations WHERE agent_id = ? ORDER BY seq DESC", (agent_id,))
        return [_conversation(r) for r in rows]

    def rename_conversation(self, conversation_id: str, name: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE conversations SET name = ? WHERE id = ?", (name, conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        with self._transaction() as db:
            for table in ("messages", "files", "frames"):
                db.execute(f"DELETE FROM {table} WHERE conversation_id = ?", (conversation_id,))  # noqa: S608
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        shutil.rmtree(self.root / "blobs" / conversation_id, ignore_errors=True)
        shutil.rmtree(self.root / "frames" / conversation_id, ignore_errors=True)

    # --- messages -------------------------------------------------------------------------------------------

    def add_message(self, conversation_id: str, message: dict[str, Any]) -> None:
        """Stores a message in its SSE form (``+00:00`` timestamps); REST rendering converts them."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages (conversation_id, message_id, body) VALUES (?, ?, ?)",
                (conversation_id, message["message_id"], json.dumps(message)),
            )

    def replace_message(self, conversation_id: str, message: dict[str, Any]) -> None:
        """Store a new version of a message (same ``message_id``), in its place."""
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET body = ? WHERE conversation_id = ? AND message_id = ?",
                (json.dumps(message), conversation_id, message["message_id"]),
            )

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT body FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,))
        return [json.loads(r["body"]) for r in rows]

    def changed_at(self, agent_id: str) -> dict[str, datetime]:
        """Per conversation of the agent, when it last changed: its creation or its newest message timestamp
        (``created_at`` or ``updated_at``: a reply's grows while it streams, an edit may move it)."""
        changed = {c.id: c.created_at for c in self.conversations(agent_id)}
        rows = self._query(
            "SELECT m.conversation_id, m.body FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.agent_id = ?",
            (agent_id,),
        )
        for row in rows:
            body = json.loads(row["body"])
            for key in ("created_at", "updated_at"):
                if isinstance(body.get(key), str):
                    stamp = wire.parse_time(body[key])
                    changed[row["conversation_id"]] = max(changed[row["conversation_id"]], stamp)
        return changed

    def message_count(self, conversation_id: str) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM messages WHERE conversation_id = ?", (conversation_id,))
        return int(rows[0]["n"])

    # --- files ----------------------------------------------------------------------------------------------

    def temp_path(self, suffix: str = "") -> Path:
        return self.root / "tmp" / (wire.new_id() + suffix)

    def blob_path(self, conversation_id: str, file_id: str) -> Path:
        return self.root / "blobs" / conversation_id / file_id

    def files(self, conversation_id: str) -> list[FileRow]:
        rows = self._query("SELECT * FROM files WHERE conversation_id = ? ORDER BY seq", (conversation_id,))
        return [_file(r) for r in rows]

    def file(self, conversation_id: str, file_ref: str) -> FileRow | None:
        rows = self._query(
            "SELECT * FROM files WHERE conversation_id = ? AND file_ref = ?", (conversation_id, file_ref)
        )
        return _file(rows[0]) if rows else None

    def commit_files(self, conversation: ConversationRow, staged: list[StagedFile]) -> list[FileRow]:
        """Moves staged files into place; a same-name file is replaced (new id, original ``created_at``)."""
        directory = self.root / "blobs" / conversation.id
        directory.mkdir(parents=True, exist_ok=True)
        committed: list[FileRow] = []
        replaced: list[Path] = []
        with self._transaction() as db:
            for item in staged:
                old = db.execute(
                    "SELECT * FROM files WHERE conversation_id = ? AND file_ref = ?",
                    (conversation.id, item.file_ref),
                ).fetchone()
                created = wire.parse_time(old["created_at"]) if old else wire.now()
                row = FileRow(
                    conversation.id,
                    item.file_ref,
                    wire.new_id(),
                    item.file_hash,
                    item.size,
                    item.mime_type,
                    created,
                    conversation.agent_id,
                )
                item.path.replace(directory / row.file_id)
                if old:
                    replaced.append(directory / old["file_id"])
                    db.execute("DELETE FROM files WHERE seq = ?", (old["seq"],))
                db.execute(
                    "INSERT INTO files (conversation_id, file_ref, file_id, file_hash, file_size_raw,"
                    " mime_type, created_at, agent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.conversation_id,
                        row.file_ref,
                        row.file_id,
                        row.file_hash,
                        row.file_size_raw,
                        row.mime_type,
                        row.created_at.isoformat(),
                        row.agent_id,
                    ),
                )
                committed.append(row)
        for path in replaced:
            path.unlink(missing_ok=True)
        return committed

    # --- data frames ----------------------------------------------------------------------------------------

    def frame_path(self, conversation_id: str, data_frame_id: str) -> Path:
        return self.root / "frames" / conversation_id / f"{data_frame_id}.parquet"

    def frames(self, conversation_id: str) -> list[FrameRow]:
        rows = self._query("SELECT * FROM frames WHERE conversation_id = ? ORDER BY seq", (conversation_id,))
        return [_frame(r) for r in rows]

    def frame(self, conversation_id: str, name: str) -> FrameRow | None:
        rows = self._query("SELECT * FROM frames WHERE conversation_id = ? AND name = ?", (conversation_id, name))
        return _frame(rows[0]) if rows else None

    def add_frame(self, frame: FrameRow, parquet: Path) -> None:
        """Moves a written Parquet file into place; a frame of the same name is replaced."""
        target = self.frame_path(frame.conversation_id, frame.data_frame_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        parquet.replace(target)
        with self._transaction() as db:
            old = db.execute(
                "SELECT data_frame_id FROM frames WHERE conversation_id = ? AND name = ?",
                (frame.conversation_id, frame.name),
            ).fetchone()
            db.execute(
                "DELETE FROM frames WHERE conversation_id = ? AND name = ?",
                (frame.conversation_id, frame.name),
            )
            db.execute(
                "INSERT INTO frames (conversation_id, name, data_frame_id, num_rows, column_headers,"
                " created_at, input_id_type, file_id, file_ref, description)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    frame.conversation_id,
                    frame.name,
                    frame.data_frame_id,
                    frame.num_rows,
                    json.dumps(list(frame.column_headers)),
                    frame.created_at.isoformat(),
                    frame.input_id_type,
                    frame.file_id,
                    frame.file_ref,
                    frame.description,
                ),
            )
        if old:
            self.frame_path(frame.conversation_id, old["data_frame_id"]).unlink(missing_ok=True)


def _agent(r: sqlite3.Row) -> AgentRow:
    return AgentRow(
        r["id"], r["name"], r["description"], r["mode"], bool(r["hidden"]), wire.parse_time(r["created_at"])
    )


def _conversation(r: sqlite3.Row) -> ConversationRow:
    return ConversationRow(r["id"], r["agent_id"], r["name"], bool(r["user_named"]), wire.parse_time(r["created_at"]))


def _file(r: sqlite3.Row) -> FileRow:
    return FileRow(
        r["conversation_id"],
        r["file_ref"],
        r["file_id"],
        r["file_hash"],
        r["file_size_raw"],
        r["mime_type"],
        wire.parse_time(r["created_at"]),
        r["agent_id"],
    )


def _frame(r: sqlite3.Row) -> FrameRow:
    return FrameRow(
        r["conversation_id"],
        r["name"],
        r["data_frame_id"],
        r["num_rows"],
        tuple(json.loads(r["column_headers"])),
        wire.parse_time(r["created_at"]),
        r["input_id_type"],
        r["file_id"],
        r["file_ref"],
        r["description"],
    )
