"""``convsync repair``: rebuild an unusable state database (corrupt, or written by a newer convsync).

The way mbsync and vdirsyncer recover a lost sync state, the state is rebuilt from what is authoritative: the
folders' ``.agent``/``.conversation`` markers bind the folders again on the next start, the server's messages,
files and frames give the transcripts and downloads again. The one thing only the database holds is the queue
of prompts and uploads not yet delivered, so that is salvaged first, row by row, and put into the new database
as it was (an entry whose send may have reached the server keeps its state and baseline: the delivery check
looks for it on the server before any resend). The old files are kept next to it, renamed, never deleted.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from convsync import paths
from convsync.config import Config
from convsync.lock import InstanceLock
from convsync.mirror.state import DB_NAME, SalvagedEntry, State

# Columns read from an old outbox (those it lacks are skipped); anything a newer schema added is not needed.
_COLUMNS = (
    "seq",
    "conversation_id",
    "kind",
    "payload",
    "sha256",
    "barrier",
    "state",
    "attempts",
    "baseline",
    "taken_from",  # schema v2: a leftover .prompt.taking of a queued prompt is recognised after the repair
)


@dataclass(frozen=True, slots=True)
class RepairReport:
    kept_as: tuple[Path, ...]  # the old database files, renamed
    salvaged: int  # queued prompts and uploads carried over
    unreadable: int  # queue rows that could not be read (their text is lost to convsync)

    def text(self) -> str:
        kept = ", ".join(str(p) for p in self.kept_as) or "nothing (there was no database)"
        lines = [
            f"convsync repair: the old state is kept as {kept}",
            f"  {self.salvaged} queued prompt(s)/upload(s) carried over; they go out on the next start "
            "(one whose send may have arrived is looked for on the server first)",
            "  folders are bound again by their markers; transcripts, files and frames are rebuilt from the server",
        ]
        if self.unreadable:
            lines.append(
                f"  {self.unreadable} queued row(s) could not be read from the damaged database; "
                f"the old file keeps their bytes"
            )
        return "\n".join(lines)


def repair_state(state_dir: Path) -> RepairReport:
    """Salvage the queue of ``state_dir``'s database, keep the old files aside, and write a fresh database."""
    with InstanceLock(state_dir):  # never under a running daemon
        db = state_dir / DB_NAME
        salvaged, unreadable = salvage_queue(db) if db.exists() else ([], 0)
        kept = _set_aside(db)
        state = State(db)
        try:
            state.restore_queue(salvaged)
        finally:
            state.close()
    return RepairReport(tuple(kept), len(salvaged), unreadable)


def salvage_queue(db: Path) -> tuple[list[SalvagedEntry], int]:
    """The entries still to deliver (queued or sending), oldest first, and how many rows could not be read.

    Works on a copy (with its WAL, so the last commits count) and never writes the original."""
    with tempfile.TemporaryDirectory(prefix="convsync-repair-") as tmp:
        copy = Path(tmp) / DB_NAME
        shutil.copyfile(db, copy)
        wal = db.with_name(DB_NAME + "-wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(DB_NAME + "-wal"))
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            return _read_queue(conn)
        finally:
            conn.close()


def _read_queue(conn: sqlite3.Connection) -> tuple[list[SalvagedEntry], int]:
    try:
        seqs = [int(r[0]) for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
    except sqlite3.DatabaseError:
        seqs = []
        # The index or the table's b-tree is damaged: walk the sequence numbers the rows can have.
        with contextlib.suppress(sqlite3.DatabaseError):
            top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            seqs = list(range(1, int(top[0]) + 1)) if top else []
        if not seqs:
            return [], 1
    try:
        present = {str(r[1]) for r in conn.execute("PRAGMA table_info(outbox)")}
    except sqlite3.DatabaseError:
        present = set(_COLUMNS)
    columns = [c for c in _COLUMNS if c in present]
    out: list[SalvagedEntry] = []
    unreadable = 0
    for seq in seqs:
        try:
            row = conn.execute(f"SELECT {', '.join(columns)} FROM outbox WHERE seq=?", (seq,)).fetchone()  # noqa: S608 - names from _COLUMNS
        except sqlite3.DatabaseError:
            unreadable += 1
            continue
        if row is None:
            continue
        values = dict(zip(columns, row, strict=True))
        if values.get("state") not in ("queued", "sending"):
            continue
        out.append(
            SalvagedEntry(
                conversation_id=str(values["conversation_id"]),
                kind="upload" if values.get("kind") == "upload" else "prompt",
                payload=str(values["payload"]),
                sha256=str(values.get("sha256") or ""),
                barrier=bool(values.get("barrier", values.get("kind") != "upload")),
                sending=values.get("state") == "sending",
                attempts=int(values.get("attempts") or 0),
                baseline=str(values["baseline"]) if values.get("baseline") is not None else None,
                taken_from=str(values.get("taken_from") or ""),
            )
        )
    return out, unreadable


def _set_aside(db: Path) -> list[Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = []
    for suffix in ("", "-wal", "-shm"):
        old = db.with_name(DB_NAME + suffix)
        if old.exists():
            new = db.with_name(f"{DB_NAME}.unusable-{stamp}{suffix}")
            old.rename(new)
            kept.append(new)
    return kept


def run_repair(config: Config) -> int:
    """``convsync repair``: prints what was done; exit 0."""
    report = repair_state(paths.state_dir(config.state_dir))
    print(report.text())
    return 0
