"""The mirror against what the real server may plausibly send (emulator switches and faults): no reply is lost."""

from __future__ import annotations

from pathlib import Path

from convsync.emulator import FaultRule
from tests.integration.conftest import Mirror
from tests.waiting import wait_until


def new_conversation(mirror: Mirror, name: str = "Chat") -> tuple[Path, str]:
    folder = mirror.agent_dir / name
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    return folder, cid


def agent_texts(mirror: Mirror, cid: str) -> list[str]:
    return [
        "".join(p.get("text", "") for p in m["content"] if p.get("kind") == "text")
        for m in mirror.emu.messages(cid)
        if m["role"] == "agent"
    ]


def test_an_unknown_delta_op_loses_no_reply(mirror: Mirror) -> None:
    """A stream with one unknown delta op is read to agent_finished; the reply is stored and mirrored whole."""
    folder, cid = new_conversation(mirror)
    # Slow enough that a client giving up at the bad op would cancel the run before it ends.
    mirror.emu.configure(chunk_delay=0.05)
    mirror.emu.set_faults([FaultRule(route="stream_message", rename_op="concat_text", count=1)])
    (folder / "prompt.txt").write_text("what happened to the reply\n")
    wait_until(lambda: agent_texts(mirror, cid), 15, what="the agent's reply on the server")
    mirror.wait_idle(folder)
    assert agent_texts(mirror, cid) == ["You said: what happened to the reply"]
    wait_until(
        lambda: (folder / "transcript.md").read_text() == mirror.server_rendering(cid), 10, what="the transcript"
    )
    (stream,) = [r for r in mirror.emu.requests if r.route == "stream_message"]
    assert stream.fault == "renamed a delta op to concat_text"
    assert stream.last_event == "agent_finished"


def test_an_incomplete_message_in_the_middle_hides_nothing_after_it(mirror: Mirror) -> None:
    """A message the server left incomplete is shown marked, and every later message is mirrored too."""
    folder, cid = new_conversation(mirror)
    mirror.emu.inject_message(cid, "a run that died midway", complete=False)
    mirror.emu.inject_message(cid, "a later answer")
    wait_until(
        lambda: "a later answer" in (folder / "transcript.md").read_text(), 15, what="the later message mirrored"
    )
    text = (folder / "transcript.md").read_text()
    assert text == mirror.server_rendering(cid)
    assert text.count("(incomplete)") == 1
    assert "UTC (incomplete)\n\na run that died midway\n\n" in text
