"""transcript.md: rendering, the live tail, and planning updates (convsync.mirror.transcript)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from convsync.api.models import (
    AttachmentPart,
    ChartPart,
    Message,
    MessageFinished,
    MessageStarted,
    PartDelta,
    TextPart,
    ThoughtPart,
    ToolCallPart,
)
from convsync.mirror.state import TranscriptEntry
from convsync.mirror.transcript import (
    LiveTail,
    apply_plan,
    digest,
    plan_transcript,
    read_tail,
    render_message,
)

T0 = datetime(2025, 6, 23, 15, 5, 49, tzinfo=UTC)


def user(mid: str, text: str) -> Message:
    return Message(mid, "user", (TextPart("u", text),), T0)


def agent(mid: str, text: str, thought: str = "Thinking.", complete: bool = True) -> Message:
    return Message(mid, "agent", (ThoughtPart("t", thought), TextPart("x", text)), T0, complete)


def committed(*messages: Message) -> list[TranscriptEntry]:
    out, offset = [], 0
    for m in messages:
        text = render_message(m)
        offset += len(text.encode())
        out.append(TranscriptEntry(m.message_id, digest(text), offset))
    return out


def test_a_message_renders_as_a_heading_with_role_and_minute() -> None:
    """One heading per turn, role and UTC time to the minute, then the text as written."""
    assert render_message(user("m1", "Hello *there*")) == "## User · 2025-06-23 15:05 UTC\n\nHello *there*\n\n"


def test_thoughts_tool_calls_and_charts_are_collapsed() -> None:
    """Non-answer parts render as <details> blocks; the answer text stays visible."""
    message = Message(
        "m2",
        "agent",
        (
            ThoughtPart("a", "Let me check."),
            ToolCallPart("b", "lookup", arguments_raw='{"q": 1}', status="finished", result="42"),
            ChartPart("c", chart_spec_raw="{}", description="Sales"),
            TextPart("d", "The answer is 42."),
        ),
        T0,
    )
    text = render_message(message)
    assert text.count("<details>") == 3
    assert "<summary>Tool call: lookup (finished)</summary>" in text
    assert text.endswith("The answer is 42.\n\n")


def test_attachments_link_into_files() -> None:
    """An attachment links to its file under files/ with a safe, URL-encoded name."""
    message = Message("m3", "agent", (AttachmentPart("a", "my report.pdf", "application/pdf"),), T0)
    assert "[my report.pdf](files/my%20report.pdf)" in render_message(message)


def test_code_fences_cannot_be_closed_by_the_content() -> None:
    """A tool result containing ``` gets a longer fence."""
    message = Message("m", "agent", (ToolCallPart("b", "x", result="```\nnot closing\n```"),), T0)
    assert "````\n```\nnot closing\n```\n````" in render_message(message)


def test_the_live_tail_equals_the_final_rendering(tmp_path: Path) -> None:
    """Prompt and streamed deltas appended live produce exactly the rendering of the final messages."""
    path = tmp_path / "transcript.md"
    path.write_text("")
    tail = LiveTail(path)
    tail.user_prompt("Hi", T0)
    tail.on_event(MessageStarted("a1"), T0)
    for index, kind, text in [
        (0, "thought", "Think"),
        (0, "thought", "ing."),
        (1, "text", "You said"),
        (1, "text", ": Hi"),
    ]:
        tail.on_event(PartDelta("a1", index, kind, text), T0)
    final = agent("a1", "You said: Hi")
    tail.on_event(MessageFinished(final), T0)
    assert path.read_text() == render_message(user("u1", "Hi")) + render_message(final)


def test_each_streamed_chunk_is_visible_as_soon_as_it_is_written(tmp_path: Path) -> None:
    """A reader sees the reply grow chunk by chunk (nothing is buffered)."""
    path = tmp_path / "transcript.md"
    path.write_text("")
    tail = LiveTail(path)
    tail.on_event(MessageStarted("a1"), T0)
    tail.on_event(PartDelta("a1", 0, "text", "first"), T0)
    assert path.read_text().endswith("first")
    tail.on_event(PartDelta("a1", 0, "text", " second"), T0)
    assert path.read_text().endswith("first second")


def test_plan_appends_new_messages_to_an_intact_file() -> None:
    """Committed prefix intact, no tail: only the new messages are appended."""
    m1, m2 = user("m1", "a"), agent("m2", "b")
    rows = committed(m1)
    plan = plan_transcript(rows, rows[-1].committed_offset, "", [m1, m2])
    assert plan.write == "append"
    assert plan.append_text == render_message(m2)
    assert plan.keep == 1
    assert [e.message_id for e in plan.commit] == ["m2"]


def test_plan_does_nothing_when_nothing_changed() -> None:
    """A second pass over the same messages plans no write and no commit."""
    m1 = user("m1", "a")
    rows = committed(m1)
    plan = plan_transcript(rows, rows[-1].committed_offset, "", [m1])
    assert (plan.write, plan.commit, plan.keep) == ("none", (), 1)


def test_plan_commits_a_tail_that_matches_the_server() -> None:
    """A live tail equal to the rendering of the new messages is committed without writing."""
    m1, m2 = user("m1", "a"), agent("m2", "b")
    plan = plan_transcript(
        [], len(render_message(m1) + render_message(m2)), render_message(m1) + render_message(m2), [m1, m2]
    )
    assert plan.write == "none"
    assert [e.message_id for e in plan.commit] == ["m1", "m2"]


def test_plan_rewrites_a_tail_that_differs() -> None:
    """A tail that is not the server's rendering (crash mid-stream, another heading time) is replaced."""
    m1 = user("m1", "a")
    plan = plan_transcript([], 10, "## Agent · partial", [m1])
    assert plan.write == "rewrite"
    assert plan.full_text == render_message(m1)


def test_plan_keeps_a_live_tail_the_server_has_not_caught_up_with() -> None:
    """While a reply is live, a tail running ahead of the server's messages is kept."""
    m1 = user("m1", "a")
    tail = render_message(m1) + "## Agent · 2025-06-23 15:05 UTC\n\nstreaming…"
    plan = plan_transcript([], len(tail.encode()), tail, [m1], live=True)
    assert plan.write == "none"
    assert [e.message_id for e in plan.commit] == ["m1"]


def test_plan_regenerates_a_deleted_transcript() -> None:
    """A missing file is written whole from the messages."""
    m1 = user("m1", "a")
    plan = plan_transcript(committed(m1), None, None, [m1])
    assert plan.write == "rewrite"
    assert plan.full_text == render_message(m1)


def test_plan_rewrites_when_the_server_changed_a_committed_message() -> None:
    """An edited earlier message changes its hash: the file is rewritten."""
    rows = committed(user("m1", "old"))
    plan = plan_transcript(rows, rows[-1].committed_offset, "", [user("m1", "new")])
    assert plan.write == "rewrite"
    assert "new" in plan.full_text


def test_an_incomplete_last_message_is_not_rendered_yet() -> None:
    """The last message, still being written on the server (complete=false), waits."""
    m1, m2 = user("m1", "a"), agent("m2", "b", complete=False)
    plan = plan_transcript([], 0, "", [m1, m2])
    assert [e.message_id for e in plan.commit] == ["m1"]


def test_an_incomplete_message_before_others_is_rendered_marked() -> None:
    """An incomplete message with later ones is shown marked (incomplete), and the later ones are shown too."""
    m1, m2, m3 = user("m1", "a"), agent("m2", "b", complete=False), user("m3", "c")
    plan = plan_transcript([], 0, "", [m1, m2, m3])
    assert [e.message_id for e in plan.commit] == ["m1", "m2", "m3"]
    assert "UTC (incomplete)\n\n" in render_message(m2)
    assert "(incomplete)" not in render_message(m1) + render_message(m3)


def test_apply_plan_and_read_tail_round_trip(tmp_path: Path) -> None:
    """After applying a plan the file is exactly the committed rendering."""
    path = tmp_path / "transcript.md"
    m1, m2 = user("m1", "a"), agent("m2", "b")
    apply_plan(path, plan_transcript([], None, None, [m1]))
    rows = committed(m1)
    plan = plan_transcript(rows, *read_tail(path, rows[-1].committed_offset), [m1, m2])
    apply_plan(path, plan)
    assert path.read_text() == render_message(m1) + render_message(m2)
    assert read_tail(path, plan.commit[-1].committed_offset) == (len(path.read_bytes()), "")
