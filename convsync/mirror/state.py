"""The durable state of the mirror: SQLite (stdlib) in WAL mode, with a schema version.

What it holds (schema v2; v1 lacked ``outbox.taken_from``):

- ``agents``          agent id ↔ agent folder name
- ``conversations``   conversation id ↔ folder name, with status ``active | detached | deleted`` and the last
                      activity/error shown by ``convsync status``
- ``pending_creates`` a ``mkdir`` whose conversation is being created on the server (so a crash between the
                      POST and binding adopts the conversation instead of creating a second one)
- ``outbox``          what the user asked to send, in order: prompts and uploads (``kind``), delivery state,
                      and for a prompt the identity of the ``.prompt.taking`` file it was read from
- ``transcript``      which server messages ``transcript.md`` holds, in order, and the file offset after each
- ``transfers``       per file ref: ``down`` = the version ``files/`` holds (downloaded or uploaded by us)
                      and its local name; ``up`` = an upload in progress (bytes done of size)
- ``frames``          exported data frames: the fingerprint they were exported at and their file name
- ``meta``            key/value: the root the bindings belong to, the last global error

Every row changes only after the step it records really happened. Each thread gets its own connection;
writes are serialised by one lock and run in ``BEGIN IMMEDIATE`` transactions. ``synchronous=FULL``: a prompt
is on disk before ``prompt.txt`` is emptied, even across a power cut.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from convsync import killpoints
from convsync.errors import StateUnusable

SCHEMA_VERSION = 2
DB_NAME = "state.db"
DURABLE_COMMITS = "PRAGMA synchronous=FULL"  # every connection's setting; _write(durable=False) lifts it for one commit

ConversationStatus = Literal["active", "detached", "deleted"]
OutboxKind = Literal["prompt", "upload"]
OutboxState = Literal["queued", "sending", "done", "failed"]
Direction = Literal["up", "down"]

_SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT ''
);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'detached', 'deleted')),
    bound_at REAL NOT NULL,
    bind_seq INTEGER NOT NULL,
    activity TEXT NOT NULL DEFAULT 'idle',
    last_error TEXT,
    last_activity REAL NOT NULL DEFAULT 0
);
CREATE INDEX conversations_agent ON conversations (agent_id, status);
CREATE TABLE pending_creates (
    agent_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (agent_id, folder)
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('prompt', 'upload')),
    payload TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    barrier INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    baseline TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX outbox_pending ON outbox (conversation_id, state, seq);
CREATE TABLE transcript (
    conversation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    rendered_hash TEXT NOT NULL,
    committed_offset INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE TABLE transfers (
    conversation_id TEXT NOT NULL,
    file_ref TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('up', 'down')),
    sha256 TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    done_bytes INTEGER NOT NULL DEFAULT 0,
    local_name TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, file_ref, direction)
);
CREATE TABLE frames (
    conversation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    file_name TEXT NOT NULL DEFAULT '',
    exported_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, name)
);
"""


# Each step takes the schema from the version before it to the next one (index 0: from 1 to 2).
_MIGRATIONS = ("ALTER TABLE outbox ADD COLUMN taken_from TEXT NOT NULL DEFAULT '';",)


class StateError(StateUnusable):
    """The state database is unusable (newer schema than this convsync, or corrupt)."""


class StateMissing(StateError):
    """Read-only: there is no state yet (no file, or a daemon has just made it and not yet its tables)."""


def _unusable(path: Path, why: str) -> StateError:
    return StateError(
        f"the state database {path} {why}; fix: run `convsync repair`, which keeps it aside and rebuilds the state "
        "from the folders' markers and the server, keeping every queued prompt (nothing on the server is sent again)"
    )


# --- rows ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: str
    folder: str
    name: str


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    agent_id: str
    folder: str
    name: str
    status: ConversationStatus
    bound_at: float
    bind_seq: int
    activity: str
    last_error: str | None
    last_activity: float


@dataclass(frozen=True, slots=True)
class PendingCreate:
    agent_id: str
    folder: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One thing to send. ``payload``: the prompt text, or the name of the file in ``inbox/``.

    ``barrier``: a prompt (1) waits until every earlier entry of its conversation is done; consecutive uploads
    (0) may be carried out together in one request. ``baseline``: the server's message ids just before the
    first send attempt, used to find out whether an ambiguous attempt reached the server.
    """

    seq: int
    conversation_id: str
    kind: OutboxKind
    payload: str
    sha256: str
    barrier: bool
    state: OutboxState
    attempts: int
    last_error: str | None
    baseline: tuple[str, ...] | None
    created_at: float


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """A message ``transcript.md`` holds; ``committed_offset`` is the file size right after its record."""

    message_id: str
    rendered_hash: str
    committed_offset: int


@dataclass(frozen=True, slots=True)
class TransferRow:
    """``direction='down'``: ``files/<local_name>`` holds version ``sha256`` (``filesync.remote_version``) of
    ``file_ref``. ``direction='up'``: an upload of ``file_ref`` in progress, ``done_bytes`` of ``size``."""

    conversation_id: str
    file_ref: str
    direction: Direction
    sha256: str
    size: int
    done_bytes: int
    local_name: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class FrameRow:
    conversation_id: str
    name: str
    fingerprint: str
    file_name: str
    exported_at: float


@dataclass(frozen=True, slots=True)
class SalvagedEntry:
    """A queued entry read from an unusable database by ``convsync repair``; ``baseline`` as stored (JSON)."""

    conversation_id: str
    kind: OutboxKind
    payload: str
    sha256: str
    barrier: bool
    sending: bool  # an attempt started: the delivery check runs before any resend
    attempts: int
    baseline: str | None
    taken_from: str = ""  # the identity of the .prompt.taking it was read from (``State.was_taken``)


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    prompts: int
    uploads: int


# --- the database -------------------------------------------------------------------------------------------


class State:
    """The state database. Thread-safe: one connection per thread, writes serialised."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._bindings_version = 0
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._migrate()
                self._check_integrity()
            elif not path.exists():
                raise StateMissing(f"no state database at {path}")
            elif self._check_version(self._conn()) == 0:  # the schema comes in one commit with user_version=1
                raise StateMissing(f"the state database at {path} has no tables yet")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _unusable(path, f"is corrupt ({exc})") from exc
        except StateError:
            self.close()
            raise

    # connections

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StateError("the state database is closed")
        if self.readonly:
            conn = sqlite3.connect(
                f"{self.path.as_uri()}?mode=ro",
                uri=True,
                timeout=30,
                check_same_thread=False,
                isolation_level=None,
            )
        else:
            fresh = not self.path.exists()
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            if fresh:
                self.path.chmod(0o600)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(DURABLE_COMMITS)
        conn.row_factory = sqlite3.Row
        self._local.conn = conn
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (call once no thread uses the state any more)."""
        with self._conn_lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``durable=False`` for rows that only show what is going on (a conversation's
        activity): their commit skips the fsync, so a power cut may lose them, never tear them (WAL), and the
        next durable commit carries them to disk too. Saves an fsync on the way from a save to its request."""
        if self.readonly:
            raise StateError("the state database was opened read-only")
        conn = self._conn()
        with self._write_lock:
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if not durable:
                    conn.execute(DURABLE_COMMITS)

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = self._conn().execute(sql, params).fetchall()
        return rows

    @property
    def bindings_version(self) -> int:
        """Changes after every committed write to the agents' or conversations' folders or statuses.

        Lets a caller keep something derived from the bindings (the engine's path index) and rebuild it only
        when this changed. Bumped after the commit, so a reader that sees a new version sees the new rows.
        """
        return self._bindings_version

    def _bindings_changed(self) -> None:
        with self._write_lock:
            self._bindings_version += 1

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state database {self.path} has schema version {version}, newer than this convsync "
                f"understands ({SCHEMA_VERSION}); fix: upgrade convsync, or run `convsync repair` to keep it aside "
                "and rebuild the state for this version (queued prompts are kept; nothing is sent twice)"
            )
        return version

    def _check_integrity(self) -> None:
        """Refuse a damaged database at start-up instead of failing somewhere later (``quick_check`` reads every
        page once: milliseconds for the sizes a mirror has)."""
        problems = [str(r[0]) for r in self._conn().execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise _unusable(self.path, "is corrupt (" + "; ".join(problems[:3]) + ")")

    def _migrate(self) -> None:
        conn = self._conn()
        with self._write_lock:
            version = self._check_version(conn)
            if version < 1:
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA_V1}PRAGMA user_version=1;COMMIT;")
                version = 1
            for step in range(version, SCHEMA_VERSION):
                conn.executescript(f"BEGIN IMMEDIATE;{_MIGRATIONS[step - 1]}PRAGMA user_version={step + 1};COMMIT;")

    # meta

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )

    def reset_bindings(self) -> None:
        """Forget every folder binding (the root changed); the outbox is kept."""
        with self._write() as conn:
            conn.execute("DELETE FROM agents")
            conn.execute("DELETE FROM conversations")
            conn.execute("DELETE FROM pending_creates")
            conn.execute("DELETE FROM transcript")
            conn.execute("DELETE FROM transfers")
            conn.execute("DELETE FROM frames")
        self._bindings_changed()

    # agents

    def agents(self) -> list[AgentRow]:
        return [AgentRow(r["id"], r["folder"], r["name"]) for r in self._read("SELECT * FROM agents ORDER BY id")]

    def bind_agent(self, agent_id: str, folder: str, name: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO agents(id, folder, name) VALUES(?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET folder=excluded.folder, name=excluded.name",
                (agent_id, folder, name),
            )
        self._bindings_changed()

    # conversations

    @staticmethod
    def _conversation(r: sqlite3.Row) -> ConversationRow:
        return ConversationRow(
            id=r["id"],
            agent_id=r["agent_id"],
            folder=r["folder"],
            name=r["name"],
            status=cast(ConversationStatus, r["status"]),
            bound_at=r["bound_at"],
            bind_seq=r["bind_seq"],
            activity=r["activity"],
            last_error=r["last_error"],
            last_activity=r["last_activity"],
        )

    def conversations(
        self, agent_id: str | None = None, status: ConversationStatus | None = None
    ) -> list[ConversationRow]:
        """Conversations in binding order (the order that decides which of two same-named ones got a name)."""
        sql = "SELECT * FROM conversations WHERE 1=1"
        params: list[object] = []
        if agent_id is not None:
            sql += " AND agent_id=?"
            params.append(agent_id)
        if status is not None:
            sql += " AND status=?"
            params.append(status)
        return [self._conversation(r) for r in self._read(sql + " ORDER BY bind_seq", params)]

    def count_conversations(self, status: ConversationStatus, agent_ids: Collection[str]) -> int:
        """How many conversations of ``agent_ids`` have ``status`` (counted by SQLite, no rows loaded)."""
        ids = list(agent_ids)
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        rows = self._read(
            f"SELECT COUNT(*) AS n FROM conversations WHERE status=? AND agent_id IN ({marks})",  # noqa: S608
            [status, *ids],
        )
        return int(rows[0]["n"])

    def conversation(self, cid: str) -> ConversationRow | None:
        rows = self._read("SELECT * FROM conversations WHERE id=?", (cid,))
        return self._conversation(rows[0]) if rows else None

    def bind_conversation(self, cid: str, agent_id: str, folder: str, name: str) -> None:
        """Bind (or re-attach) conversation ``cid`` to ``folder``; clears a pending create of that folder."""
        self.bind_conversations(agent_id, [(cid, folder, name)])

    def bind_conversations(self, agent_id: str, bindings: Sequence[tuple[str, str, str]]) -> None:
        """``bind_conversation`` for each ``(id, folder, name)`` of one agent, in one transaction (a first
        mirror binds a thousand folders: one commit, one fsync)."""
        if not bindings:
            return
        now = time.time()
        with self._write() as conn:
            seq = int(conn.execute("SELECT COALESCE(MAX(bind_seq), 0) FROM conversations").fetchone()[0])
            for cid, folder, name in bindings:
                seq += 1
                conn.execute(
                    "INSERT INTO conversations"
                    "(id, agent_id, folder, name, status, bound_at, bind_seq, last_activity) "
                    "VALUES(?, ?, ?, ?, 'active', ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET "
                    "folder=excluded.folder, status='active', agent_id=excluded.agent_id",
                    (cid, agent_id, folder, name, now, seq, now),
                )
                conn.execute("DELETE FROM pending_creates WHERE agent_id=? AND folder=?", (agent_id, folder))
        self._bindings_changed()
        killpoints.reached("conversation.bound")

    def set_conversation_status(self, cid: str, status: ConversationStatus) -> None:
        with self._write() as conn:
            conn.execute("UPDATE conversations SET status=? WHERE id=?", (status, cid))
        self._bindings_changed()

    def set_conversation_folder(self, cid: str, folder: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE conversations SET folder=? WHERE id=?", (folder, cid))
        self._bindings_changed()

    def set_conversation_name(self, cid: str, name: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE conversations SET name=? WHERE id=? AND name!=?", (name, cid, name))

    def refresh_names(self, agent_id: str, names: Mapping[str, str]) -> int:
        """Record the server's current names (``id → name``) of an agent's conversations; how many changed.

        Read first, written only when a name differs: this runs on every pass over the server's lists."""
        rows = self._read("SELECT id, name FROM conversations WHERE agent_id=?", (agent_id,))
        changed = [(names[r["id"]], r["id"]) for r in rows if r["id"] in names and names[r["id"]] != r["name"]]
        if changed:
            with self._write(durable=False) as conn:  # shown only; the next pass writes it again if lost
                conn.executemany("UPDATE conversations SET name=? WHERE id=?", changed)
        return len(changed)

    def set_activity(self, cid: str, activity: str, last_error: str | None) -> None:
        """What ``convsync status`` shows for the conversation (the same text as its ``status`` file)."""
        with self._write(durable=False) as conn:
            conn.execute("UPDATE conversations SET activity=?, last_error=? WHERE id=?", (activity, last_error, cid))

    # pending creates

    def pending_creates(self, agent_id: str) -> list[PendingCreate]:
        rows = self._read("SELECT * FROM pending_creates WHERE agent_id=?", (agent_id,))
        return [PendingCreate(r["agent_id"], r["folder"], r["name"], r["created_at"]) for r in rows]

    def add_pending_create(self, agent_id: str, folder: str, name: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO pending_creates(agent_id, folder, name, created_at) VALUES(?, ?, ?, ?)",
                (agent_id, folder, name, time.time()),
            )
        killpoints.reached("create.recorded")

    # outbox

    @staticmethod
    def _entry(r: sqlite3.Row) -> OutboxEntry:
        baseline = r["baseline"]
        return OutboxEntry(
            seq=r["seq"],
            conversation_id=r["conversation_id"],
            kind=cast(OutboxKind, r["kind"]),
            payload=r["payload"],
            sha256=r["sha256"],
            barrier=bool(r["barrier"]),
            state=cast(OutboxState, r["state"]),
            attempts=r["attempts"],
            last_error=r["last_error"],
            baseline=tuple(json.loads(baseline)) if baseline is not None else None,
            created_at=r["created_at"],
        )

    def enqueue(
        self,
        cid: str,
        kind: OutboxKind,
        payload: str,
        sha256: str = "",
        *,
        barrier: bool | None = None,
        taken_from: str = "",
    ) -> int:
        """Store one prompt or upload durably (committed when this returns); returns its sequence number.
        ``taken_from``: the identity of the file a prompt was read from (``prompt.file_identity``)."""
        now = time.time()
        is_barrier = (kind == "prompt") if barrier is None else barrier
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO outbox(conversation_id, kind, payload, sha256, barrier, created_at, updated_at, "
                "taken_from) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, kind, payload, sha256, int(is_barrier), now, now, taken_from),
            )
            seq = cur.lastrowid
        assert seq is not None
        if kind == "upload":
            killpoints.reached("upload.queued")
        return seq

    def pending(self, cid: str) -> list[OutboxEntry]:
        """The conversation's entries not yet done or failed, oldest first."""
        rows = self._read(
            "SELECT * FROM outbox WHERE conversation_id=? AND state IN ('queued', 'sending') ORDER BY seq",
            (cid,),
        )
        return [self._entry(r) for r in rows]

    def last_prompt(self, cid: str) -> OutboxEntry | None:
        rows = self._read(
            "SELECT * FROM outbox WHERE conversation_id=? AND kind='prompt' ORDER BY seq DESC LIMIT 1", (cid,)
        )
        return self._entry(rows[0]) if rows else None

    def restore_queue(self, entries: Sequence[SalvagedEntry]) -> None:
        """Put salvaged entries back, in order, as they were (``convsync repair``), in one transaction."""
        now = time.time()
        with self._write() as conn:
            for e in entries:
                conn.execute(
                    "INSERT INTO outbox(conversation_id, kind, payload, sha256, barrier, state, attempts, baseline, "
                    "taken_from, created_at, updated_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.conversation_id,
                        e.kind,
                        e.payload,
                        e.sha256,
                        int(e.barrier),
                        "sending" if e.sending else "queued",
                        e.attempts,
                        e.baseline,
                        e.taken_from,
                        now,
                        now,
                    ),
                )

    def was_taken(self, cid: str, identity: str) -> bool:
        """Whether a prompt of ``cid`` was stored from the file with this identity (``prompt.file_identity``)."""
        if not identity:
            return False
        rows = self._read(
            "SELECT 1 FROM outbox WHERE conversation_id=? AND kind='prompt' AND taken_from=? LIMIT 1", (cid, identity)
        )
        return bool(rows)

    def mark_sending(self, seq: int, baseline: Sequence[str] | None) -> None:
        """An attempt is about to start; the first attempt records ``baseline`` (later ones keep it)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET state='sending', attempts=attempts+1, updated_at=?, "
                "baseline=COALESCE(baseline, ?) WHERE seq=?",
                (time.time(), json.dumps(list(baseline)) if baseline is not None else None, seq),
            )
        killpoints.reached("send.marked")

    def mark_done(self, seq: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET state='done', last_error=NULL, updated_at=? WHERE seq=?",
                (time.time(), seq),
            )
        killpoints.reached("outbox.done")

    def mark_failed(self, seq: int, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET state='failed', last_error=?, updated_at=? WHERE seq=?",
                (error, time.time(), seq),
            )

    def outbox_counts(self, cid: str | None = None) -> OutboxCounts:
        if cid is None:
            rows = self._read(
                "SELECT kind, COUNT(*) AS n FROM outbox WHERE state IN ('queued', 'sending') GROUP BY kind"
            )
        else:
            rows = self._read(
                "SELECT kind, COUNT(*) AS n FROM outbox WHERE state IN ('queued', 'sending') "
                "AND conversation_id=? GROUP BY kind",
                (cid,),
            )
        counts = {r["kind"]: int(r["n"]) for r in rows}
        return OutboxCounts(prompts=counts.get("prompt", 0), uploads=counts.get("upload", 0))

    def conversations_with_pending(self) -> list[str]:
        rows = self._read("SELECT DISTINCT conversation_id FROM outbox WHERE state IN ('queued', 'sending')")
        return [r["conversation_id"] for r in rows]

    # transcript

    def transcript(self, cid: str) -> list[TranscriptEntry]:
        rows = self._read(
            "SELECT message_id, rendered_hash, committed_offset FROM transcript WHERE conversation_id=? "
            "ORDER BY position",
            (cid,),
        )
        return [TranscriptEntry(r["message_id"], r["rendered_hash"], r["committed_offset"]) for r in rows]

    def commit_transcript(self, cid: str, keep: int, added: Sequence[TranscriptEntry]) -> None:
        """Keep the first ``keep`` entries, then append ``added`` (after the file holds exactly that)."""
        with self._write() as conn:
            conn.execute("DELETE FROM transcript WHERE conversation_id=? AND position>=?", (cid, keep))
            conn.executemany(
                "INSERT INTO transcript"
                "(conversation_id, position, message_id, rendered_hash, committed_offset) "
                "VALUES(?, ?, ?, ?, ?)",
                [(cid, keep + i, e.message_id, e.rendered_hash, e.committed_offset) for i, e in enumerate(added)],
            )

        # transfers and frames
        killpoints.reached("transcript.committed")

    @staticmethod
    def _transfer(r: sqlite3.Row) -> TransferRow:
        return TransferRow(
            conversation_id=r["conversation_id"],
            file_ref=r["file_ref"],
            direction=cast(Direction, r["direction"]),
            sha256=r["sha256"],
            size=r["size"],
            done_bytes=r["done_bytes"],
            local_name=r["local_name"],
            updated_at=r["updated_at"],
        )

    def transfers(self, cid: str | None = None, direction: Direction | None = None) -> list[TransferRow]:
        if cid is None:
            rows = self._read("SELECT * FROM transfers ORDER BY conversation_id, file_ref")
        else:
            rows = self._read("SELECT * FROM transfers WHERE conversation_id=? ORDER BY file_ref", (cid,))
        return [self._transfer(r) for r in rows if direction is None or r["direction"] == direction]

    def set_transfer(
        self,
        cid: str,
        file_ref: str,
        direction: Direction,
        *,
        sha256: str = "",
        size: int = 0,
        done_bytes: int = 0,
        local_name: str = "",
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO transfers"
                "(conversation_id, file_ref, direction, sha256, size, done_bytes, local_name, updated_at) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(conversation_id, file_ref, direction) DO UPDATE SET "
                "sha256=excluded.sha256, size=excluded.size, done_bytes=excluded.done_bytes, "
                "local_name=excluded.local_name, updated_at=excluded.updated_at",
                (cid, file_ref, direction, sha256, size, done_bytes, local_name, time.time()),
            )
        if direction == "down":
            killpoints.reached("transfer.recorded")

    def delete_transfer(self, cid: str, file_ref: str, direction: Direction) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM transfers WHERE conversation_id=? AND file_ref=? AND direction=?",
                (cid, file_ref, direction),
            )

    def frames(self, cid: str) -> list[FrameRow]:
        rows = self._read("SELECT * FROM frames WHERE conversation_id=? ORDER BY name", (cid,))
        return [
            FrameRow(r["conversation_id"], r["name"], r["fingerprint"], r["file_name"], r["exported_at"]) for r in rows
        ]

    def set_frame(self, cid: str, name: str, fingerprint: str, file_name: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO frames(conversation_id, name, fingerprint, file_name, exported_at) "
                "VALUES(?, ?, ?, ?, ?) ON CONFLICT(conversation_id, name) DO UPDATE SET "
                "fingerprint=excluded.fingerprint, file_name=excluded.file_name, "
                "exported_at=excluded.exported_at",
                (cid, name, fingerprint, file_name, time.time()),
            )
        killpoints.reached("export.recorded")
