"""transcript.md grows live while a reply streams and ends up as the server's messages (emulator over HTTP)."""

from __future__ import annotations

import threading

from convsync.api.models import Message
from convsync.mirror.transcript import INTERRUPTED, render_body
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def test_a_reader_sees_the_reply_grow_before_it_ends(mirror: Mirror) -> None:
    """While a slow reply streams, transcript.md already holds part of it; afterwards it is the server's text."""
    folder, cid = chat(mirror)
    transcript = folder / "transcript.md"
    (folder / "prompt.txt").write_text("/slow 10 150")

    def partial_reply() -> str | None:
        text = transcript.read_text()
        return text if "Part 2 of 10" in text else None

    partial = wait_until(partial_reply, 10, what="part of the reply in transcript.md")
    assert partial is not None
    assert "Part 10 of 10" not in partial
    wait_until(lambda: "Part 10 of 10" in transcript.read_text(), 15, what="the whole reply")
    mirror.wait_idle(folder)
    assert transcript.read_text() == mirror.server_rendering(cid)


def test_tail_follows_one_file_that_only_grows(mirror: Mirror) -> None:
    """A reader holding the file open (tail -f) sees the whole prompt and reply: the file is appended, not replaced."""
    folder, cid = chat(mirror)
    transcript = folder / "transcript.md"
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        with transcript.open(encoding="utf-8") as f:
            while not done.is_set():
                chunk = f.read()
                if chunk:
                    seen.append(chunk)
                else:
                    done.wait(0.02)
            seen.append(f.read())

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        (folder / "prompt.txt").write_text("/slow 5 50")
        wait_until(lambda: "Part 5 of 5" in transcript.read_text(), 15)
        mirror.wait_idle(folder)
    finally:
        done.set()
        reader.join()
    assert "".join(seen) == mirror.server_rendering(cid)


def test_the_history_of_a_remote_conversation_is_rendered(mirror: Mirror) -> None:
    """A conversation that already has messages appears with its whole history."""
    cid = mirror.emu.create_conversation(mirror.aid, "With history")
    mirror.emu.inject_message(cid, "first question", role="user")
    mirror.emu.inject_message(cid, "first answer", role="agent")
    folder = mirror.wait_folder_of(cid)
    wait_until(lambda: "first answer" in (folder / "transcript.md").read_text(), 10)
    assert (folder / "transcript.md").read_text() == mirror.server_rendering(cid)


def test_messages_posted_elsewhere_are_appended(mirror: Mirror) -> None:
    """A message from the web UI or another machine shows up in transcript.md on the next poll."""
    folder, cid = chat(mirror)
    mirror.emu.inject_message(cid, "posted from the web UI", role="user")
    wait_until(lambda: "posted from the web UI" in (folder / "transcript.md").read_text(), 10)
    assert (folder / "transcript.md").read_text() == mirror.server_rendering(cid)


def test_a_deleted_transcript_is_regenerated(mirror: Mirror) -> None:
    """Deleting transcript.md brings it back, whole."""
    folder, cid = chat(mirror)
    (folder / "prompt.txt").write_text("hello")
    wait_until(lambda: "You said: hello" in (folder / "transcript.md").read_text(), 10)
    mirror.wait_idle(folder)
    (folder / "transcript.md").unlink()
    wait_until(
        lambda: (folder / "transcript.md").is_file() and "You said: hello" in (folder / "transcript.md").read_text(), 10
    )
    assert (folder / "transcript.md").read_text() == mirror.server_rendering(cid)


def test_a_tail_left_by_a_crash_stands_and_is_closed(mirror: Mirror) -> None:
    """A half-written reply after the committed text (a crash mid-stream) is never cut: it is closed at start."""
    folder, _ = chat(mirror)
    transcript = folder / "transcript.md"
    (folder / "prompt.txt").write_text("hello")
    wait_until(lambda: "You said: hello" in transcript.read_text(), 10)
    mirror.wait_idle(folder)
    mirror.stop()
    with transcript.open("a") as f:
        f.write("## Agent · 2025-01-01 00:00 UTC\n\n```\nhalf a rep")
    before = transcript.read_text()
    mirror.start()
    wait_until(lambda: transcript.read_text() != before, 10, what="the half reply to be closed")
    added = transcript.read_text()[len(before) :]
    assert added.startswith("\n```\n\n## Interrupted · ")
    assert added.endswith(f"UTC\n\n> {INTERRUPTED}\n\n")


def test_a_cut_stream_still_ends_with_the_whole_reply(mirror: Mirror) -> None:
    """If the reply stream breaks, the prompt is not resent; what streamed stands and the reply follows."""
    from convsync.emulator import FaultRule

    folder, cid = chat(mirror)
    transcript = folder / "transcript.md"
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", stream_cut_after=4, finish_run=True, count=1)])
    (folder / "prompt.txt").write_text("cut me")
    wait_until(lambda: "You said: cut me" in transcript.read_text(), 15)
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == ["cut me"]
    reply = [Message.from_wire(m) for m in mirror.emu.messages(cid)][-1]
    wait_until(lambda: transcript.read_text().endswith(render_body(reply)), 10, what="the whole reply at the end")
    assert transcript.read_text().count("## User") == 1


def test_a_chart_reply_is_drawn_as_svg_and_embedded(mirror: Mirror) -> None:
    """/chart with the charts extra: files/charts/<message>-<n>.svg parses as XML and transcript.md embeds it."""
    import xml.etree.ElementTree as ET

    folder, cid = chat(mirror)
    (folder / "prompt.txt").write_text("/chart")
    wait_until(lambda: "Here is a chart." in (folder / "transcript.md").read_text(), 15, what="the chart reply")
    mirror.wait_idle(folder)
    reply = mirror.emu.messages(cid)[-1]
    svg = folder / "files" / "charts" / f"{reply['message_id']}-1.svg"
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert f"![Chart: A bar chart](files/charts/{svg.name})" in (folder / "transcript.md").read_text()
    assert (folder / "transcript.md").read_text() == mirror.server_rendering(cid)
