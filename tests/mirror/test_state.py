"""The durable state database (convsync.mirror.state)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.mirror.state import SCHEMA_VERSION, State, StateError, TranscriptEntry


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    s = State(tmp_path / "state" / "state.db")
    yield s
    s.close()


def test_a_new_database_has_the_schema_version_and_wal(tmp_path: Path) -> None:
    """The schema version is recorded and the journal is WAL (readers never block the daemon)."""
    s = State(tmp_path / "state.db")
    s.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_the_database_file_is_private(tmp_path: Path) -> None:
    """The state holds prompts: only the user may read it."""
    State(tmp_path / "state.db").close()
    assert (tmp_path / "state.db").stat().st_mode & 0o077 == 0


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer convsync is not touched."""
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError, match="newer"):
        State(tmp_path / "state.db")


def test_a_version_1_database_is_migrated_keeping_its_queue(tmp_path: Path) -> None:
    """A v1 database (no taken_from) gains the column and keeps its queued prompts."""
    from convsync.mirror.state import _SCHEMA_V1

    conn = sqlite3.connect(tmp_path / "state.db")
    conn.executescript(_SCHEMA_V1 + "PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO outbox(conversation_id, kind, payload, created_at, updated_at) VALUES('c1', 'prompt', 'hi', 0, 0)"
    )
    conn.commit()
    conn.close()
    s = State(tmp_path / "state.db")
    assert [e.payload for e in s.pending("c1")] == ["hi"]
    s.enqueue("c1", "prompt", "again", taken_from="1:2:3:4")
    assert s.was_taken("c1", "1:2:3:4")
    s.close()


def test_the_outbox_keeps_order_and_survives_reopening(tmp_path: Path) -> None:
    """Entries come back oldest first, after closing and reopening the database."""
    s = State(tmp_path / "state.db")
    s.enqueue("c1", "upload", "data.csv")
    s.enqueue("c1", "prompt", "look at data.csv", "abc")
    s.close()
    s = State(tmp_path / "state.db")
    pending = s.pending("c1")
    assert [(e.kind, e.payload, e.barrier) for e in pending] == [
        ("upload", "data.csv", False),
        ("prompt", "look at data.csv", True),
    ]
    s.close()


def test_the_first_send_attempt_records_the_baseline_for_good(state: State) -> None:
    """Later attempts keep the baseline of the first, so an ambiguous first attempt can be found."""
    seq = state.enqueue("c1", "prompt", "hi")
    state.mark_sending(seq, ["m1", "m2"])
    state.mark_sending(seq, ["m1", "m2", "m3"])
    [entry] = state.pending("c1")
    assert (entry.state, entry.attempts, entry.baseline) == ("sending", 2, ("m1", "m2"))


def test_done_and_failed_entries_leave_the_queue(state: State) -> None:
    """Only queued and sending entries count as pending."""
    a = state.enqueue("c1", "prompt", "a")
    b = state.enqueue("c1", "prompt", "b")
    state.enqueue("c1", "prompt", "c")
    state.mark_done(a)
    state.mark_failed(b, "refused")
    assert [e.payload for e in state.pending("c1")] == ["c"]
    assert state.outbox_counts("c1").prompts == 1


def test_bindings_keep_binding_order_and_reattach(state: State) -> None:
    """Conversations list in binding order; binding a detached one again makes it active."""
    state.bind_conversation("c2", "a", "Same", "Same")
    state.bind_conversation("c1", "a", "Same (2)", "Same")
    state.set_conversation_status("c2", "detached")
    state.bind_conversation("c2", "a", "Same", "Same")
    rows = state.conversations(agent_id="a")
    assert [(r.id, r.status) for r in rows] == [("c2", "active"), ("c1", "active")]


def test_commit_transcript_replaces_from_keep(state: State) -> None:
    """Entries after ``keep`` are replaced by the new ones."""
    state.commit_transcript("c1", 0, [TranscriptEntry("m1", "h1", 10), TranscriptEntry("m2", "h2", 20)])
    state.commit_transcript("c1", 1, [TranscriptEntry("m3", "h3", 25)])
    assert [(e.message_id, e.committed_offset) for e in state.transcript("c1")] == [("m1", 10), ("m3", 25)]


def test_a_readonly_connection_reads_while_another_writes(tmp_path: Path) -> None:
    """`convsync status` can read while the daemon writes."""
    writer = State(tmp_path / "state.db")
    writer.bind_conversation("c1", "a", "f", "n")
    reader = State(tmp_path / "state.db", readonly=True)
    assert [r.id for r in reader.conversations()] == ["c1"]
    with pytest.raises(StateError):
        reader.set_meta("x", "y")
    reader.close()
    writer.close()


def test_threads_write_concurrently_without_losing_rows(state: State) -> None:
    """Writes from several threads are serialised; every row arrives."""

    def work(n: int) -> None:
        for i in range(20):
            state.enqueue(f"c{n}", "prompt", f"p{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.outbox_counts().prompts == 80


def test_count_conversations_counts_one_status_of_the_given_agents(state: State) -> None:
    """The count covers only the given agents' conversations with the given status."""
    state.bind_conversation("c1", "a1", "One", "One")
    state.bind_conversation("c2", "a1", "Two", "Two")
    state.bind_conversation("c3", "a2", "Three", "Three")
    state.set_conversation_status("c2", "detached")
    assert state.count_conversations("active", ["a1"]) == 1
    assert state.count_conversations("active", ["a1", "a2"]) == 2
    assert state.count_conversations("detached", ["a1", "a2"]) == 1
    assert state.count_conversations("active", []) == 0


def test_the_bindings_version_changes_with_bindings_only(state: State) -> None:
    """Binding writes change the bindings version; activity updates leave it alone."""
    v0 = state.bindings_version
    state.bind_agent("a1", "Agent", "Agent")
    state.bind_conversation("c1", "a1", "One", "One")
    v1 = state.bindings_version
    assert v1 > v0
    state.set_activity("c1", "idle", None)
    assert state.bindings_version == v1
    state.set_conversation_folder("c1", "Uno")
    v2 = state.bindings_version
    assert v2 > v1
    state.set_conversation_status("c1", "detached")
    assert state.bindings_version > v2


def test_only_activity_rows_are_committed_without_an_fsync(state: State) -> None:
    """What a conversation is doing (``status``'s text) is committed with ``synchronous=NORMAL``: it is shown, not
    kept, and its fsync sat between a save and its request. The prompt queued right after it, and a write that
    fails, run with ``synchronous=FULL`` again."""
    conn = state._conn()  # this thread's connection: the statements it runs tell which writes are synced
    mode = {"now": conn.execute("PRAGMA synchronous").fetchone()[0]}
    synced: list[tuple[str, int]] = []

    def trace(sql: str) -> None:
        if sql.startswith("PRAGMA synchronous="):
            mode["now"] = {"NORMAL": 1, "FULL": 2}[sql.split("=", 1)[1]]
        elif sql.startswith(("UPDATE", "INSERT")):
            synced.append((" ".join(sql.split()[:3]), mode["now"]))

    assert mode["now"] == 2
    state.bind_conversation("c1", "a", "Chat", "Chat")
    conn.set_trace_callback(trace)
    state.set_activity("c1", "sending", None)
    state.enqueue("c1", "prompt", "hello", "0" * 64)
    with pytest.raises(sqlite3.IntegrityError):
        state.set_activity("c1", None, None)  # type: ignore[arg-type]  # NOT NULL: the transaction fails
    state.mark_sending(state.pending("c1")[0].seq, [])
    conn.set_trace_callback(None)
    assert synced == [
        ("UPDATE conversations SET", 1),
        ("INSERT INTO outbox(conversation_id,", 2),
        ("UPDATE conversations SET", 1),
        ("UPDATE outbox SET", 2),
    ]
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
