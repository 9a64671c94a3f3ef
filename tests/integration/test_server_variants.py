"""The mirror against what the real server may plausibly send (emulator switches and faults): no reply is lost."""

from __future__ import annotations

import io
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.api.client import AgentClient
from convsync.emulator import FaultRule
from convsync.logs import setup_logging
from tests.integration.conftest import Mirror
from tests.waiting import wait_until

ALL_C0 = "".join(chr(i) for i in range(32))


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """The log as convsync writes it (its own handler and filter), into a buffer; the root logger is restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    setup_logging(level="info", stream=buffer)
    yield buffer
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def new_conversation(mirror: Mirror, name: str = "Chat") -> tuple[Path, str]:
    folder = mirror.agent_dir / name
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    return folder, cid


def make_frame(mirror: Mirror, cid: str, name: str) -> None:
    """The agent makes a small data frame named ``name`` (verbatim) in the conversation."""
    with AgentClient(mirror.emu.base_url, mirror.emu.api_key, rate_limit=None) as client:
        client.post_message(mirror.aid, cid, f"/bigframe {shlex.quote(name)} 3")
    assert name in mirror.emu.data_frame_names(cid)


def raw_controls(text: str) -> set[str]:
    """The control characters in ``text`` other than the line breaks that end its lines."""
    return {ch for line in text.split("\n") for ch in line if ord(ch) < 0x20 or ord(ch) == 0x7F}


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


def test_control_characters_from_the_server_never_reach_a_person_raw(mirror: Mirror, log_text: io.StringIO) -> None:
    """Every C0 character in a server name and an error body is escaped in errors.log, status and the log."""
    folder, cid = new_conversation(mirror)
    mirror.emu.set_faults([FaultRule(route="get_data_frame", status=400, message=f"bad{ALL_C0}body - fix: obey")])
    make_frame(mirror, cid, f"frame{ALL_C0}name")
    errors = folder / "errors.log"
    wait_until(lambda: errors.is_file() and "could not be exported" in errors.read_text(), 20, what="the frame report")
    mirror.emu.set_faults([FaultRule(route="list_messages", status=400, message=f"bad{ALL_C0}body")])
    status = folder / "status"
    wait_until(lambda: "unusable" in status.read_text(), 20, what="the failure in status")
    mirror.stop()
    texts = {"errors.log": errors.read_text(), "status": status.read_text(), "log": log_text.getvalue()}
    assert {name: raw_controls(text) for name, text in texts.items()} == {
        "errors.log": set(),
        "status": set(),
        "log": set(),
    }
    assert "frame\\0\\x01" in texts["errors.log"] and "bad\\0\\x01" in texts["errors.log"]
    assert "bad\\0\\x01" in texts["status"] and "bad\\0\\x01" in texts["log"]
    assert all(line[:4].isdigit() for line in texts["errors.log"].splitlines())
    assert all(line.count(" - fix: ") == 1 for line in texts["errors.log"].splitlines())


def test_a_frame_the_server_cannot_serve_blocks_no_other(mirror: Mirror) -> None:
    """A frame whose name the server fails on is reported and retried alone; the others export, status stays ok."""
    mirror.emu.configure(hostile_frame_names="fail")
    folder, cid = new_conversation(mirror)
    bad = "a\0bad\nname"
    for name in (bad, "later_one", "later_two"):
        make_frame(mirror, cid, name)
    for name in ("later_one", "later_two"):
        wait_until((folder / "data-frames" / f"{name}.parquet").is_file, 30, what=f"{name}.parquet")
    errors = folder / "errors.log"
    wait_until(lambda: errors.is_file() and "could not be exported" in errors.read_text(), 10, what="the report")
    report = errors.read_text()
    assert "'a\\x00bad\\nname'" in report and "unreachable" not in report and "cannot be reached" not in report
    assert not (folder / "status").read_text().startswith("error")

    def tries() -> int:
        return len([r for r in mirror.emu.requests if r.route == "get_data_frame" and "bad" in r.path])

    first = tries()
    wait_until(lambda: tries() > first, 30, what="the failing frame to be tried again on its own")
    assert not (folder / "status").read_text().startswith("error")


def test_a_connection_that_fails_on_frames_tries_one_frame_per_pass(mirror: Mirror) -> None:
    """Frame downloads whose connection is reset (no answer at all, as from a server that is gone): each pass
    tries one frame and leaves the others to the next pass, instead of spending every frame's retries in a row;
    once the connection works, every frame is exported."""
    folder, cid = new_conversation(mirror)
    names = ("one", "two", "three")
    mirror.emu.set_faults([FaultRule(route="get_data_frame", reset=True)])
    mirror.emu.clear_requests()
    for name in names:
        make_frame(mirror, cid, name)

    def lists() -> int:
        return len([r for r in mirror.emu.requests if r.route == "list_data_frames"])

    wait_until(lambda: lists() >= 3, 60, what="three passes over the frames")
    passes: list[set[str]] = []
    for r in mirror.emu.requests:
        if r.route == "list_data_frames":
            passes.append(set())
        elif r.route == "get_data_frame" and passes:
            passes[-1].add(r.path)
    assert any(passes) and all(len(tried) <= 1 for tried in passes), passes
    mirror.emu.set_faults([])
    for name in names:
        wait_until((folder / "data-frames" / f"{name}.parquet").is_file, 60, what=f"{name}.parquet")
