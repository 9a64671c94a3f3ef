"""transcript.md followed by GNU ``tail -f``: what the follower printed is the final file, byte for byte."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import threading
from pathlib import Path

from convsync.api.models import Message
from convsync.mirror.transcript import render_body
from tests.integration.conftest import Mirror
from tests.waiting import wait_until


class Sampler:
    """Watches the file's inode and size every few milliseconds while the conversation runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            st = os.stat(self.path)
            self.samples.append((st.st_ino, st.st_size))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def send(mirror: Mirror, folder: Path, prompt: str) -> None:
    """Save a prompt and wait until its reply (or failure) is in and nothing is queued."""
    before = mirror.emu.user_messages(mirror.bound(folder)).count(prompt)
    (folder / "prompt.txt").write_text(prompt)
    cid = mirror.bound(folder)
    wait_until(lambda: mirror.emu.user_messages(cid).count(prompt) > before, 15, what=f"{prompt!r} on the server")
    wait_until(
        lambda: (folder / "status").read_text().startswith(("idle", "error: the agent failed")),
        15,
        what="the reply to end",
    )


def test_tail_f_prints_the_final_transcript_through_every_kind_of_reply(mirror: Mirror) -> None:
    """Plain reply, tool call, chart, attachment, failed run, a server time in another minute: tail -f
    printed exactly the final file; the file never shrank and kept its inode."""
    folder = mirror.agent_dir / "Followed"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    transcript = folder / "transcript.md"
    inode = transcript.stat().st_ino
    sampler = Sampler(transcript)
    follower = subprocess.Popen(
        ["/usr/bin/tail", "-c", "+1", "-f", str(transcript)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    printed: list[bytes] = []
    reader = threading.Thread(target=lambda: printed.extend(iter(lambda: follower.stdout.read1(65536), b"")))  # type: ignore[union-attr]
    reader.start()
    try:
        send(mirror, folder, "hello")
        send(mirror, folder, "/tool")
        send(mirror, folder, "/chart")
        (folder / "inbox" / "notes.txt").write_text("some notes\n")
        send(mirror, folder, "/attach notes.txt")
        send(mirror, folder, "/fail")
        wait_until(lambda: "## Failed" in transcript.read_text(), 10, what="the failure in the transcript")
        # The server stamps the last reply a minute later than the heading written while it streamed.
        mirror.emu.edit_message(cid, mirror.emu.messages(cid)[-3]["message_id"], shift_seconds=60)
        send(mirror, folder, "bye")
        mirror.wait_idle(folder)
        final = transcript.read_bytes()
        wait_until(lambda: b"".join(printed) == final, 10, what="tail -f to print the whole file")
    finally:
        sampler.stop()
        follower.terminate()
        follower.wait(5)
        reader.join(5)
        errors = follower.stderr.read() if follower.stderr is not None else b""
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    assert b"".join(printed) == final
    assert errors == b""  # no "file truncated"
    assert {ino for ino, _ in sampler.samples} == {inode}
    sizes = [size for _, size in sampler.samples]
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    text = final.decode()
    assert mirror.emu.messages(cid)[-3]["role"] == "user"  # /fail stored its prompt, and no reply
    # Every message exactly once, in the server's order, with the failure notice after the failed prompt.
    headings = re.compile(r"^## (User|Agent|Failed) · \d{4}-\d\d-\d\d \d\d:\d\d UTC\n\n", re.MULTILINE)
    pieces = headings.split(text)[1:]
    shown = list(zip(pieces[::2], pieces[1::2], strict=True))
    expected = [(m.role.capitalize(), render_body(m)) for m in (Message.from_wire(w) for w in mirror.emu.messages(cid))]
    failed = [i for i, (label, _) in enumerate(shown) if label == "Failed"]
    assert failed == [9] and shown[9][1].startswith("> The agent failed (internal_error): The agent failed on purpose")
    assert shown[:9] + shown[10:] == expected
