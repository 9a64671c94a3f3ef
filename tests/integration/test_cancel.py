"""`cancel` in a conversation folder: the streaming reply stops, queued prompts are taken back, the transcript
says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from convsync.emulator import FaultRule
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def test_cancel_stops_the_reply_and_takes_back_the_queued_prompt(mirror: Mirror) -> None:
    """touch cancel mid-reply: the run stops on the server, the queued prompt lands in prompt.cancelled-*.txt."""
    folder, cid = chat(mirror, "Cancelled")
    transcript, status = folder / "transcript.md", folder / "status"
    (folder / "prompt.txt").write_text("/slow 40 150")
    wait_until(lambda: "Part 2 of 40" in transcript.read_text(), 15, what="the reply to stream")
    (folder / "prompt.txt").write_text("never sent")
    wait_until(lambda: status.read_text() == "streaming (queued: 1 prompt)\n", 10, what="the prompt to queue")
    (folder / "cancel").touch()
    wait_until(lambda: not (folder / "cancel").exists(), 10, what="the cancel to be carried out")
    mirror.wait_idle(folder)
    [kept] = folder.glob("prompt.cancelled-*.txt")
    assert kept.read_text() == "never sent\n"
    text = transcript.read_text()
    assert "Part 40 of 40" not in text
    assert f"> 1 queued prompt taken back, not sent: {kept.name}\n" in text
    assert "## Cancelled · " in text and "## Interrupted" not in text
    wait_until(lambda: not mirror.emu.active_runs, 10, what="the run to end on the server")
    # Ended by the cancel: a run left to finish (6 s, within that wait) would have stored the whole reply.
    assert "Part 40 of 40" not in json.dumps(mirror.emu.messages(cid))
    assert mirror.emu.user_messages(cid) == ["/slow 40 150"]


def test_cancel_with_nothing_streaming_takes_back_queued_prompts(mirror: Mirror) -> None:
    """Prompts queued while the server fails are taken back by a cancel and never sent."""
    folder, cid = chat(mirror, "Queued")
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=503)])
    (folder / "prompt.txt").write_text("waiting")
    wait_until(lambda: "1 prompt" in (folder / "status").read_text(), 15, what="the prompt to wait")
    (folder / "cancel").touch()
    wait_until(lambda: list(folder.glob("prompt.cancelled-*.txt")), 10, what="the prompt to be taken back")
    mirror.emu.clear_faults()
    mirror.wait_idle(folder, timeout=30)
    assert mirror.emu.user_messages(cid) == []
    assert "> 1 queued prompt taken back, not sent: prompt.cancelled-" in (folder / "transcript.md").read_text()


def test_convsync_cancel_creates_the_file(mirror: Mirror, tmp_path: Path) -> None:
    """`convsync cancel DIR` asks for a cancel in a conversation folder, and refuses any other folder (78)."""
    folder, _ = chat(mirror, "Commanded")
    mirror.stop()  # the file stays for the test to see
    done = subprocess.run(
        [sys.executable, "-m", "convsync", "cancel", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (folder / "cancel").is_file()
    other = subprocess.run(
        [sys.executable, "-m", "convsync", "cancel", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert other.returncode == 78
    assert "not a conversation folder" in other.stderr


def test_cancel_stops_a_silent_reply_at_the_next_keep_alive(mirror: Mirror) -> None:
    """A reply silent for seconds (a long tool call) stops at the server's next ping, not its next words."""
    mirror.emu.configure(ping_interval=0.3)
    folder, _ = chat(mirror, "Silent")
    transcript = folder / "transcript.md"
    (folder / "prompt.txt").write_text("/slow 3 5000")
    wait_until(lambda: "Part 1 of 3" in transcript.read_text(), 15, what="the first part")
    (folder / "cancel").touch()
    wait_until(lambda: not (folder / "cancel").exists(), 3, what="the cancel within a few pings (next words: 5 s)")
    assert "Part 2 of 3" not in transcript.read_text()
    assert "> You cancelled the reply above; it was stopped.\n" in transcript.read_text()


def test_a_cancel_before_the_server_confirms_the_prompt_keeps_a_prompt_it_stored(mirror: Mirror) -> None:
    """A prompt the server stored before the cancel came is on the server: not taken back as 'not sent'."""
    folder, cid = chat(mirror, "Early")
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", bytes_per_second=20)])
    (folder / "prompt.txt").write_text("hello")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["hello"], 15, what="the server to store the prompt")
    (folder / "cancel").touch()
    wait_until(lambda: not (folder / "cancel").exists(), 10, what="the cancel to be carried out")
    mirror.emu.clear_faults()
    mirror.wait_idle(folder)
    assert list(folder.glob("prompt.cancelled-*.txt")) == []
    text = (folder / "transcript.md").read_text()
    assert "taken back" not in text
    assert text.count("\nhello\n") == 1
    assert mirror.emu.user_messages(cid) == ["hello"]
