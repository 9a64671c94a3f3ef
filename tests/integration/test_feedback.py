"""What the folder and `convsync status` say about a conversation: failed runs, queued prompts, its name."""

from __future__ import annotations

from convsync.statusreport import collect
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def entry(mirror: Mirror, cid: str) -> dict[str, object]:
    report = collect(mirror.config)
    assert report is not None
    [found] = [vars_of(c) for c in report.conversations if c.id == cid]
    return found


def vars_of(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


def test_a_failed_run_shows_in_the_transcript_the_status_and_last_error(mirror: Mirror) -> None:
    """/fail: a Failed block in transcript.md, `error: the agent failed…` in status, and last_error."""
    folder, cid = chat(mirror, "Failing")
    (folder / "prompt.txt").write_text("/fail")
    status = folder / "status"
    wait_until(lambda: status.read_text().startswith("error: the agent failed"), 15, what="the failure in status")
    text = (folder / "transcript.md").read_text()
    assert "\n\n## Failed · " in text
    assert text.endswith("> The agent failed (internal_error): The agent failed on purpose (/fail).\n\n")
    assert status.read_text() == "error: the agent failed: The agent failed on purpose (/fail).\n"
    wait_until(lambda: entry(mirror, cid)["last_error"], 10, what="last_error in convsync status")
    assert entry(mirror, cid)["last_error"] == "the agent failed: The agent failed on purpose (/fail)."


def test_a_reply_that_succeeds_clears_the_failure(mirror: Mirror) -> None:
    """After a failed run, the next successful reply makes the folder idle and clears last_error."""
    folder, cid = chat(mirror, "Recovering")
    (folder / "prompt.txt").write_text("/fail")
    wait_until(lambda: (folder / "status").read_text().startswith("error:"), 15, what="the failure")
    wait_until(lambda: (folder / "prompt.txt").read_text() == "", 10, what="prompt.txt emptied")
    (folder / "prompt.txt").write_text("again")
    mirror.wait_idle(folder)
    assert entry(mirror, cid)["last_error"] is None


def test_status_counts_prompts_queued_behind_a_streaming_reply(mirror: Mirror) -> None:
    """A prompt saved while a reply streams: `streaming (queued: 1 prompt)`, not just `streaming`."""
    folder, _ = chat(mirror, "Busy")
    status = folder / "status"
    (folder / "prompt.txt").write_text("/slow 20 150")
    wait_until(lambda: status.read_text() == "streaming\n", 10, what="the reply to stream")
    (folder / "prompt.txt").write_text("next one")
    wait_until(lambda: status.read_text() == "streaming (queued: 1 prompt)\n", 10, what="the queued prompt in status")
    mirror.wait_idle(folder, timeout=30)


def test_status_shows_the_servers_current_name(mirror: Mirror) -> None:
    """A conversation renamed on the server keeps its folder; `convsync status` shows the new name."""
    _, cid = chat(mirror, "Old name")
    mirror.emu.rename_conversation(cid, "New name")
    wait_until(lambda: entry(mirror, cid)["name"] == "New name", 10, what="the new name in convsync status")
    assert entry(mirror, cid)["folder"] == "Demo Agent/Old name"
