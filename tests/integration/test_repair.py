"""An unusable state database: a clear error with a documented exit code, and `convsync repair` rebuilding it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from convsync.api.client import AgentClient
from convsync.cli import Exit
from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root
from convsync.mirror.prompt import TAKING, file_identity
from convsync.mirror.state import SCHEMA_VERSION, State
from tests.integration.test_sync_command import convsync, write_config


def setup(emulator: EmulatorServer, tmp_path: Path) -> tuple[Path, Path, Path]:
    root, state = tmp_path / "root", tmp_path / "state"
    init_root(root)
    return root, state, write_config(tmp_path / "config.yaml", emulator, root, state)


def test_a_corrupt_state_database_exits_65_and_names_the_fix(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A state.db that is not a database: exit 65 (not 1, "a bug"), and the message says `convsync repair`."""
    _root, state, config = setup(emulator, tmp_path)
    state.mkdir(mode=0o700)
    (state / "state.db").write_bytes(b"this is not an SQLite database, it was overwritten" * 200)
    done = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert done.returncode == Exit.STATE_UNUSABLE == 65, done.stderr
    assert "is corrupt" in done.stderr and "convsync repair" in done.stderr
    assert "bug" not in done.stderr
    status = convsync("status", "--config", str(config), key=emulator.api_key)
    assert status.returncode == 65 and "convsync repair" in status.stderr, status


def test_a_state_database_of_a_newer_convsync_exits_65_and_names_the_fix(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A newer schema version: exit 65, and the message says upgrade convsync or run `convsync repair`."""
    _root, state, config = setup(emulator, tmp_path)
    State(state / "state.db").close()
    conn = sqlite3.connect(state / "state.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    done = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert done.returncode == 65, done.stderr
    assert "upgrade convsync" in done.stderr and "convsync repair" in done.stderr


def test_repair_keeps_the_queue_and_sends_nothing_already_on_the_server(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """After `convsync repair`, a queued prompt goes once, one whose send had arrived is not resent, and the
    folders are bound again by their markers (no second conversation)."""
    root, state, config = setup(emulator, tmp_path)
    aid = emulator.agent_id("Demo Agent")
    cid = emulator.create_conversation(aid, "Work")
    first = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert first.returncode == 0, first.stderr
    folder = root / "Demo Agent" / "Work"
    assert (folder / ".conversation").read_text().strip() == cid
    # A send that reached the server before the crash, and a prompt queued behind it.
    s = State(state / "state.db")
    before = [m["message_id"] for m in emulator.messages(cid)]
    arrived = s.enqueue(cid, "prompt", "this one had arrived")
    s.mark_sending(arrived, before)
    s.enqueue(cid, "prompt", "this one was queued")
    s.close()
    with AgentClient(emulator.base_url, emulator.api_key) as client:
        client.post_message(aid, cid, "this one had arrived")
    conn = sqlite3.connect(state / "state.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")  # unusable for this convsync
    conn.close()
    assert convsync("sync", "--config", str(config), key=emulator.api_key).returncode == 65

    repaired = convsync("repair", "--config", str(config), key=emulator.api_key)
    assert repaired.returncode == 0, repaired.stderr
    assert "2 queued" in repaired.stdout
    assert [p.name for p in state.glob("state.db.unusable-*")]

    again = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert again.returncode == 0, again.stderr
    assert emulator.user_messages(cid) == ["this one had arrived", "this one was queued"]
    assert len(emulator.conversations(aid)) == 1
    assert "this one was queued" in (folder / "transcript.md").read_text()
    status = convsync("status", "--json", "--config", str(config), key=emulator.api_key)
    assert cid in json.dumps(json.loads(status.stdout))


def test_a_leftover_prompt_taking_of_a_queued_prompt_is_not_sent_twice_after_repair(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A crash between a prompt's commit and the unlink of its .prompt.taking, then a database that breaks:
    `convsync repair` carries the entry's file identity over, so the leftover is recognised and the prompt
    reaches the server once."""
    root, state, config = setup(emulator, tmp_path)
    aid = emulator.agent_id("Demo Agent")
    cid = emulator.create_conversation(aid, "Work")
    assert convsync("sync", "--config", str(config), key=emulator.api_key).returncode == 0
    folder = root / "Demo Agent" / "Work"
    taking = folder / TAKING
    taking.write_text("stored, then the crash\n")
    s = State(state / "state.db")
    s.enqueue(cid, "prompt", "stored, then the crash", taken_from=file_identity(taking.stat(), taking.stat().st_size))
    s.close()
    conn = sqlite3.connect(state / "state.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()

    repaired = convsync("repair", "--config", str(config), key=emulator.api_key)
    assert repaired.returncode == 0, repaired.stderr
    again = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert again.returncode == 0, again.stderr

    assert emulator.user_messages(cid) == ["stored, then the crash"]
    assert not taking.exists()
