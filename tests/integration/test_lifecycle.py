"""Conversations ↔ folders: create, delete, rename, names, the root marker (real folders, emulator over HTTP)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from convsync.api.client import AgentClient
from convsync.emulator import FaultRule
from convsync.errors import RootUnavailable
from convsync.mirror.engine import Engine
from convsync.mirror.names import MAX_NAME_BYTES
from tests.integration.conftest import AGENT, Mirror, remove_folder
from tests.waiting import wait_until


def names_on_server(mirror: Mirror) -> list[str]:
    return [c["name"] for c in mirror.emu.conversations(mirror.aid)]


def lists_passes(mirror: Mirror) -> int:
    """How many times convsync listed the agent's conversations (each lists pass does once)."""
    return sum(1 for r in mirror.emu.requests if r.method == "GET" and r.path.endswith(f"{mirror.aid}/conversations"))


def wait_lists_pass(mirror: Mirror) -> None:
    """Wait until convsync has listed the conversations twice more (so one whole pass ran after now)."""
    start = lists_passes(mirror)
    wait_until(lambda: lists_passes(mirror) >= start + 2, 10, what="two more lists passes")


def test_mkdir_creates_a_conversation(mirror: Mirror) -> None:
    """A new folder in an agent folder becomes a conversation of that name, bound by its marker."""
    folder = mirror.agent_dir / "Budget planning"
    folder.mkdir()
    cid = mirror.bound(folder)
    assert [c["id"] for c in mirror.emu.conversations(mirror.aid) if c["name"] == "Budget planning"] == [cid]
    parts = ("prompt.txt", "transcript.md", "status", "inbox", "files", "data-frames")
    wait_until(lambda: all((folder / name).exists() for name in parts), 10, what="the folder's files")


def test_a_remote_conversation_appears_as_a_folder(mirror: Mirror) -> None:
    """A conversation created elsewhere gets its folder, named after it."""
    cid = mirror.emu.create_conversation(mirror.aid, "From the web UI")
    folder = mirror.wait_folder_of(cid)
    assert folder.name == "From the web UI"


def test_conversations_found_at_start_have_folders_at_ready_and_changes_after_it_are_watched(mirror: Mirror) -> None:
    """The first scan builds every folder (in one batch, before READY); the watcher starts once each had its first
    look, so a folder made later becomes a conversation with the periodic rescan and list polls out of the
    picture."""
    mirror.stop()
    cids = [mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}") for i in range(40)]
    mirror.start(rescan_seconds=3600.0, poll_conversations_seconds=3600.0)
    markers = {p.read_text().strip() for p in mirror.agent_dir.glob("*/.conversation")}
    assert set(cids) <= markers  # at READY, without waiting
    listed = {r.path.split("/")[-2] for r in mirror.emu.requests if r.route == "list_data_frames"}
    wait_until(
        lambda: set(cids) <= {r.path.split("/")[-2] for r in mirror.emu.requests if r.route == "list_data_frames"},
        15,
        what=f"the first look at every conversation ({len(listed)} so far)",
    )
    folder = mirror.agent_dir / "Made after start"
    folder.mkdir()
    cid = mirror.bound(folder)
    assert cid in {c["id"] for c in mirror.emu.conversations(mirror.aid)}


def new_conversation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "convsync.mirror.agentpass"]
    return [line for line in lines if "new conversation" in line]


def test_a_first_mirror_logs_its_new_folders_in_one_line_and_a_later_one_by_name(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    """Forty conversations found at start make one log line (their count, the agent folder, the first names), not
    forty; a conversation that appears later gets its own line with its folder."""
    mirror.stop()
    for i in range(40):
        mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}")
    caplog.set_level(logging.INFO, logger="convsync.mirror.agentpass")
    mirror.start()
    [line] = new_conversation_lines(caplog)
    head, _, names = line.partition(": ")
    assert head == f"40 new conversations → {mirror.agent_dir}"
    assert names.count("'Remote ") == 3 and names.endswith(", …")
    cid = mirror.emu.create_conversation(mirror.aid, "Later")
    folder = mirror.wait_folder_of(cid)
    wait_until(lambda: len(new_conversation_lines(caplog)) == 2, 10, what="the later conversation's log line")
    assert new_conversation_lines(caplog)[1] == f"new conversation 'Later' → {folder}"


def test_changes_made_during_the_first_mirror_are_watched(mirror: Mirror) -> None:
    """The watcher runs as soon as the folders exist (READY): a folder made and a prompt saved while the first
    looks still run are acted on at once, before the first mirror is over; polls and rescans are out of reach."""
    mirror.stop()
    cids = [mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}") for i in range(10)]
    slow = cids[0]  # the oldest: its first look comes last, and its messages take 3 s
    mirror.emu.set_faults([FaultRule(method="GET", path=rf"/{slow}/messages$", latency=3.0, count=1)])
    never = 3600.0
    engine = mirror.start(
        rescan_seconds=never, poll_conversations_seconds=never, poll_idle_seconds=never, poll_active_seconds=never
    )
    assert engine.watching
    folder = mirror.wait_folder_of(cids[-1])
    made = mirror.agent_dir / "Made in the window"
    made.mkdir()
    (folder / "prompt.txt").write_text("saved during the first mirror")
    wait_until(lambda: mirror.emu.user_messages(cids[-1]), 10, what="the prompt saved during the first mirror")
    assert mirror.bound(made, timeout=10) in {c["id"] for c in mirror.emu.conversations(mirror.aid)}
    wait_until(lambda: read_messages(mirror, slow), 10, what="the slow first look")
    sent = next(r for r in mirror.emu.requests if r.method == "POST" and f"/{cids[-1]}/" in r.path)
    slow_read = next(r for r in mirror.emu.requests if r.route == "list_messages" and f"/{slow}/" in r.path)
    assert sent.started < slow_read.finished
    assert mirror.emu.user_messages(cids[-1]) == ["saved during the first mirror"]


def read_messages(mirror: Mirror, cid: str) -> bool:
    return any(r.route == "list_messages" and f"/{cid}/" in r.path and r.status for r in mirror.emu.requests)


def test_a_remote_delete_moves_the_folder_aside(mirror: Mirror) -> None:
    """A conversation deleted on the server keeps its folder, moved under .deleted/, with everything in it."""
    keep = mirror.emu.create_conversation(mirror.aid, "Keep")
    cid = mirror.emu.create_conversation(mirror.aid, "Doomed")
    folder = mirror.wait_folder_of(cid)
    mirror.wait_folder_of(keep)
    (folder / "notes.txt").write_text("mine")
    mirror.emu.delete_conversation(cid)
    wait_until(lambda: not folder.exists(), 10, what="the folder to move aside")
    moved = list((mirror.root / ".deleted" / AGENT).iterdir())
    assert len(moved) == 1
    assert moved[0].name.startswith("Doomed ")
    assert (moved[0] / "notes.txt").read_text() == "mine"


def test_a_local_delete_detaches(mirror: Mirror) -> None:
    """Deleting a folder keeps the conversation on the server, and the folder does not come back."""
    other = mirror.emu.create_conversation(mirror.aid, "Other")
    mirror.wait_folder_of(other)
    folder = mirror.agent_dir / "Scratch"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    remove_folder(folder)
    wait_lists_pass(mirror)
    wait_lists_pass(mirror)
    assert not folder.exists()
    assert cid in [c["id"] for c in mirror.emu.conversations(mirror.aid)]


def test_a_local_delete_deletes_remotely_when_configured(mirror: Mirror) -> None:
    """With on_local_delete: delete_remote, deleting the folder deletes the conversation on the server."""
    mirror.stop()
    mirror.start(on_local_delete="delete_remote")
    keep = mirror.emu.create_conversation(mirror.aid, "Keep")
    mirror.wait_folder_of(keep)
    folder = mirror.agent_dir / "Throwaway"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    remove_folder(folder)
    wait_until(lambda: cid not in [c["id"] for c in mirror.emu.conversations(mirror.aid)], 10)


def test_deleting_every_folder_at_once_deletes_nothing_remotely(mirror: Mirror) -> None:
    """Safety valve: all folders of an agent vanishing at once detaches them even with delete_remote."""
    mirror.stop()
    mirror.start(on_local_delete="delete_remote")
    ids = [mirror.emu.create_conversation(mirror.aid, name) for name in ("One", "Two", "Three")]
    for cid in ids:
        mirror.wait_folder_of(cid)
    for folder in list(mirror.agent_dir.iterdir()):
        if folder.is_dir():
            remove_folder(folder)
    wait_lists_pass(mirror)
    wait_lists_pass(mirror)
    assert sorted(c["id"] for c in mirror.emu.conversations(mirror.aid)) == sorted(ids)


def test_a_remote_auto_rename_keeps_the_folder(mirror: Mirror) -> None:
    """The server renaming a conversation after its first message (auto-title) moves and duplicates nothing."""
    folder = mirror.agent_dir / "Draft"
    folder.mkdir()
    cid = mirror.bound(folder)
    with AgentClient(mirror.emu.base_url, mirror.emu.api_key) as client:
        client.post_message(mirror.aid, cid, "What is the weather like?")  # the sync route auto-renames
    wait_until(lambda: names_on_server(mirror) != ["Draft"], 10, what="the server to rename the conversation")
    wait_lists_pass(mirror)
    assert sorted(p.name for p in mirror.agent_dir.iterdir() if p.is_dir()) == ["Draft"]
    wait_until(lambda: "What is the weather like?" in (folder / "transcript.md").read_text(), 10)


def test_a_folder_renamed_locally_stays_bound(mirror: Mirror) -> None:
    """Renaming a folder keeps its conversation: prompts saved in it still go to the same conversation."""
    folder = mirror.agent_dir / "Before"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    renamed = folder.rename(mirror.agent_dir / "After")
    wait_lists_pass(mirror)
    (renamed / "prompt.txt").write_text("still me")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["still me"], 10)
    assert names_on_server(mirror) == ["Before"]


def test_two_same_named_conversations_get_two_stable_folders(mirror: Mirror) -> None:
    """Same-named conversations get "Name" and "Name (2)", and keep them across restarts and renames."""
    first = mirror.emu.create_conversation(mirror.aid, "Same")
    second = mirror.emu.create_conversation(mirror.aid, "Same")
    a, b = mirror.wait_folder_of(first), mirror.wait_folder_of(second)
    assert {a.name, b.name} == {"Same", "Same (2)"}
    mirror.stop()
    mirror.emu.rename_conversation(first, "Same (2)")  # names may even swap on the server
    mirror.emu.rename_conversation(second, "Same")
    mirror.start()
    wait_lists_pass(mirror)
    assert mirror.wait_folder_of(first) == a
    assert mirror.wait_folder_of(second) == b
    assert sorted(p.name for p in mirror.agent_dir.iterdir() if p.is_dir()) == ["Same", "Same (2)"]


HOSTILE = ["../x", "a/b", "nul\0byte", "é" * 300, ".", "..", "../../../../etc", "CON", ".hidden", "a\nb"]


def test_hostile_names_stay_inside_the_root(mirror: Mirror, tmp_path: Path) -> None:
    """Server names with separators, dots, NUL, 300 characters or newlines become safe folders in the agent
    folder; nothing is written outside the root."""
    outside_before = sorted(str(p) for p in tmp_path.rglob("*") if mirror.root not in p.parents and p != mirror.root)
    ids = [mirror.emu.create_conversation(mirror.aid, name) for name in HOSTILE]
    folders = [mirror.wait_folder_of(cid) for cid in ids]
    for folder in folders:
        assert folder.parent == mirror.agent_dir
        assert not folder.name.startswith(".")
        assert len(folder.name.encode()) <= MAX_NAME_BYTES
        assert "\0" not in folder.name and "/" not in folder.name and "\n" not in folder.name
    assert len(set(folders)) == len(HOSTILE)
    outside_after = sorted(
        str(p)
        for p in tmp_path.rglob("*")
        if mirror.root not in p.parents and p != mirror.root and "state" not in p.parts
    )
    assert outside_after == [p for p in outside_before if "state" not in Path(p).parts]


def test_a_hostile_agent_name_stays_inside_the_root(mirror: Mirror) -> None:
    """An agent called "../.." gets a safe folder inside the root."""
    aid = mirror.emu.add_agent("../..")
    wait_until(
        lambda: any(
            (p / ".agent").is_file() and (p / ".agent").read_text().strip() == aid for p in mirror.root.iterdir()
        ),
        10,
    )
    assert sorted(p.name for p in mirror.root.iterdir() if not p.name.startswith(".")) == ["Demo Agent", "___"]


def test_no_marker_no_start(mirror: Mirror) -> None:
    """Without .convsync-root (an unmounted disk?) the engine refuses to start."""
    mirror.stop()
    (mirror.root / ".convsync-root").unlink()
    with pytest.raises(RootUnavailable):
        Engine(mirror.config).start()


def test_a_vanished_root_marker_pauses_everything(mirror: Mirror) -> None:
    """While the marker is missing nothing is created; once it is back the mirror catches up."""
    marker = mirror.root / ".convsync-root"
    engine = mirror.engine
    assert engine is not None
    os.rename(marker, mirror.root / "marker.bak")
    wait_until(lambda: "marker" in (engine.summary().last_error or ""), 10)
    cid = mirror.emu.create_conversation(mirror.aid, "While unmounted")
    with pytest.raises(RootUnavailable):
        engine.run_once()  # the check every job makes first
    assert not (mirror.agent_dir / "While unmounted").exists()
    os.rename(mirror.root / "marker.bak", marker)
    mirror.wait_folder_of(cid)
    wait_until(lambda: engine.summary().last_error is None, 10)
