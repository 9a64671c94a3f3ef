"""A conversation that 404s for a while (the server restarted on another data directory, then back): its folder
moves to .deleted/, and once the server has it again it is mirrored again; the 404s cost no flood of requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.campaign.rig import LIMIT, Rig, max_in_window
from tests.waiting import wait_until

KEY = "s4w_comeback-key"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def hide(emu: EmulatorServer, cid: str, agent: str) -> None:
    """Make the server answer 404 for ``cid`` and not list it (as a server on another data directory would)."""
    emu._store._db.execute("UPDATE conversations SET agent_id=? WHERE id=?", (agent, cid))


def test_a_conversation_back_on_the_server_is_mirrored_again(rig: Rig) -> None:
    """404 → moved to .deleted/; listed again → a folder under its name again, with its whole transcript."""
    rig.start()
    folder, cid = rig.conversation("Comes back")
    rig.save_prompt(folder, "before the outage")
    rig.wait_mirrored(folder, cid)
    hide(rig.emu, cid, "somewhere-else")
    wait_until(lambda: not folder.exists(), 30, what="the folder moved aside")
    assert any((rig.root / ".deleted").rglob("transcript.md"))
    hide(rig.emu, cid, rig.aid)
    wait_until((folder / ".conversation").is_file, 30, what="the folder back")
    assert (folder / ".conversation").read_text().strip() == cid
    rig.wait_mirrored(folder, cid)
    assert "before the outage" in (folder / "transcript.md").read_text()
    rig.save_prompt(folder, "after the outage")
    rig.wait_delivered(cid, ["before the outage", "after the outage"])


def requests_during(rig: Rig, seconds: float) -> int:
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start >= seconds, seconds + 2, interval=0.1)
    return rig.transport.between(start, time.monotonic())


def test_conversations_that_404_cost_no_more_requests_than_healthy_ones(rig: Rig) -> None:
    """While every conversation 404s (the safety valve keeps their folders), re-listing and polling send no more
    requests than the same conversations healthy, and never more than the client's rate limit."""
    rig.start()
    cids = []
    for i in range(3):
        folder, cid = rig.conversation(f"Gone {i}")
        rig.wait_mirrored(folder, cid)
        cids.append(cid)
    healthy = requests_during(rig, 5)
    for cid in cids:
        hide(rig.emu, cid, "somewhere-else")
    gone = requests_during(rig, 5)
    assert gone <= healthy * 1.5 + 5, (gone, healthy)
    assert max_in_window(rig.transport.attempts, LIMIT.per_seconds) <= LIMIT.requests


def test_conversations_that_404_ask_for_re_listing_on_a_backoff(emu: EmulatorServer, tmp_path: Path) -> None:
    """Polled every second but listed every 30 s: while three conversations 404 for 10 s, their agent is
    re-listed a handful of times (a backoff per conversation), not after every poll of each."""
    rig = Rig.make(emu, tmp_path, poll_conversations_seconds=30.0, rescan_seconds=30.0)
    try:
        cids = [emu.create_conversation(rig.aid, f"Gone {i}") for i in range(3)]
        rig.start()  # lists them at once
        for cid in cids:
            rig.wait_mirrored(rig.folder_of(cid), cid)
        for cid in cids:
            hide(rig.emu, cid, "somewhere-else")
        emu.clear_requests()
        requests_during(rig, 10)
        lists = [r for r in emu.requests if r.route == "list_conversations"]
        polls = [r for r in emu.requests if r.route == "list_messages"]
        assert len(polls) >= 15, len(polls)  # they were polled all along
        assert len(lists) <= 12, (len(lists), len(polls))
    finally:
        rig.stop()
