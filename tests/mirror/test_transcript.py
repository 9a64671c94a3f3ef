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
    PartFinished,
    StreamStarted,
    TextPart,
    ThoughtPart,
    ToolCallPart,
)
from convsync.mirror.state import TranscriptEntry
from convsync.mirror.transcript import (
    LiveTail,
    apply_plan,
    closer,
    content_hash,
    notice,
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
        out.append(TranscriptEntry(m.message_id, content_hash(m), offset))
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
    tail = LiveTail(path, prompt="Hi")
    tail.on_event(StreamStarted("r", "c", T0))
    tail.on_event(MessageStarted("a1", T0))
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


def test_a_tail_that_differs_stands_and_the_server_version_follows_as_a_revision() -> None:
    """A streamed reply the server stored differently is not cut: it is closed and its final form appended."""
    m1, m2 = user("m1", "a"), agent("m2", "the whole answer")
    tail = render_message(m1) + "## Agent · 2025-06-23 15:05 UTC\n\n<details><summary>Thought</summary>\n\nThin"
    plan = plan_transcript([], len(tail.encode()), tail, [m1, m2])
    assert plan.write == "append"
    assert plan.append_text == "\n\n" + render_message(m2, revised=True)
    assert [e.message_id for e in plan.commit] == ["m1", "~orphan", "m2"]
    assert plan.commit[-1].committed_offset == len((tail + plan.append_text).encode())


def test_a_cut_fence_is_closed_before_the_revision() -> None:
    """Half a code block left by a cut stream cannot swallow the revision after it."""
    m2 = agent("m2", "done")
    tail = "## Agent · 2025-06-23 15:05 UTC\n\n```python\nprint("
    plan = plan_transcript([], len(tail.encode()), tail, [m2])
    assert plan.append_text.startswith("\n```\n\n## Agent · 2025-06-23 15:05 UTC · revised\n\n")


def test_a_heading_minute_that_differs_from_the_server_is_not_a_change() -> None:
    """A message streamed under another minute than the server's created_at is committed as it stands."""
    m1 = user("m1", "a")
    tail = render_message(m1).replace("15:05", "15:06")
    plan = plan_transcript([], len(tail.encode()), tail, [m1])
    assert (plan.write, [e.message_id for e in plan.commit]) == ("none", ["m1"])


def test_a_message_posted_elsewhere_meanwhile_does_not_revise_the_streamed_reply() -> None:
    """The server may place a message from elsewhere before the streamed ones: it is appended after them."""
    other, m1, m2 = user("o", "from the web"), user("m1", "a"), agent("m2", "b")
    tail = render_message(m1) + render_message(m2)
    plan = plan_transcript([], len(tail.encode()), tail, [other, m1, m2])
    assert plan.append_text == render_message(other)
    assert [e.message_id for e in plan.commit] == ["m1", "m2", "o"]


def test_a_notice_in_the_tail_is_kept() -> None:
    """A failure notice written while streaming is convsync's own text: committed, never revised."""
    m1 = user("m1", "a")
    tail = render_message(m1) + notice("Failed", T0, ["The agent failed: boom"])
    plan = plan_transcript([], len(tail.encode()), tail, [m1])
    assert plan.write == "none"
    assert [e.message_id for e in plan.commit] == ["m1", "~notice"]
    assert plan.commit[-1].committed_offset == len(tail.encode())


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


def test_a_message_changed_on_the_server_is_appended_as_a_revision() -> None:
    """An earlier message edited on the server gets its new form appended, marked revised; nothing is cut."""
    rows = committed(user("m1", "old"))
    plan = plan_transcript(rows, rows[-1].committed_offset, "", [user("m1", "new")])
    assert plan.write == "append"
    assert plan.append_text == render_message(user("m1", "new"), revised=True)
    assert plan.keep == 1


def test_entries_of_a_rewriting_convsync_are_taken_over_without_a_revision() -> None:
    """State written before the log was append-only (rendering hashes) causes no revision after an upgrade."""
    m1 = user("m1", "a")
    old = [TranscriptEntry("m1", "0" * 64, len(render_message(m1).encode()))]
    plan = plan_transcript(old, old[0].committed_offset, "", [m1])
    assert plan.write == "none"
    assert (plan.keep, plan.commit) == (0, (TranscriptEntry("m1", content_hash(m1), old[0].committed_offset),))


def test_an_unclosed_fence_is_closed_within_its_message() -> None:
    """A text part that opens a code block and never closes it gets the closing fence in its rendering."""
    text = "Here:\n~~~~sh\nls -l"
    assert closer(text) == "\n~~~~"
    assert render_message(user("m1", text)).endswith("ls -l\n~~~~\n\n")
    assert closer("```\nfine\n```\n") == ""
    assert closer("<!-- a comment that never ends") == "\n-->"


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


def test_a_tool_call_is_written_live_in_its_final_form_before_the_text_after_it(tmp_path: Path) -> None:
    """A finished tool call is written when the stream says so, and the answer after it streams live."""
    path = tmp_path / "transcript.md"
    tool = ToolCallPart("b", "get_weather", arguments_raw='{"city": "Oslo"}', status="finished", result='{"t": 21}')
    final = Message("a1", "agent", (ThoughtPart("t", "Hm."), tool, TextPart("x", "21 °C")), T0)
    tail = LiveTail(path)
    tail.on_event(MessageStarted("a1", T0))
    tail.on_event(PartDelta("a1", 0, "thought", "Hm."))
    tail.on_event(PartFinished("a1", 1, tool))
    tail.on_event(PartDelta("a1", 2, "text", "21 "))
    assert path.read_text().endswith('"t": 21\n}\n```\n\n</details>\n\n21 ')
    tail.on_event(PartDelta("a1", 2, "text", "°C"))
    tail.on_event(MessageFinished(final))
    assert path.read_text() == render_message(final)


def test_text_after_an_unfinished_part_waits_for_it(tmp_path: Path) -> None:
    """Parts are written in order: a later part's text is held until the part before it is finished."""
    path = tmp_path / "transcript.md"
    chart = ChartPart("c", '{"mark": "bar"}', description="Bars")
    final = Message("a1", "agent", (chart, TextPart("x", "Here.")), T0)
    tail = LiveTail(path)
    tail.on_event(MessageStarted("a1", T0))
    tail.on_event(PartDelta("a1", 1, "text", "Here."))
    assert path.read_text() == "## Agent · 2025-06-23 15:05 UTC\n\n"
    tail.on_event(MessageFinished(final))
    assert path.read_text() == render_message(final)


def test_a_json_tool_result_is_pretty_printed_like_its_arguments() -> None:
    """A tool result that is JSON shows indented in a json block; any other result as it is."""
    call = ToolCallPart("b", "lookup", arguments_raw='{"q":"x"}', result='{"rows":[1,2],"ok":true}')
    text = render_message(Message("m", "agent", (call,), T0))
    assert 'Result:\n\n```json\n{\n  "rows": [\n    1,\n    2\n  ],\n  "ok": true\n}\n```' in text
    plain = ToolCallPart("b", "lookup", arguments_raw="{}", result="not json")
    assert "Result:\n\n```\nnot json\n```" in render_message(Message("m", "agent", (plain,), T0))


def test_a_revision_appended_before_a_crash_is_committed_not_appended_again() -> None:
    """A revision written but not committed (killed in between) is found in the tail: no second copy, no notice."""
    rows = committed(user("m1", "old"))
    revision = render_message(user("m1", "new"), revised=True)
    size = rows[-1].committed_offset + len(revision.encode())
    plan = plan_transcript(rows, size, revision, [user("m1", "new")])
    assert (plan.write, plan.append_text) == ("none", "")
    assert plan.commit == (TranscriptEntry("m1", content_hash(user("m1", "new")), size),)


def test_a_cut_reply_closed_and_revised_before_a_crash_is_committed_not_closed_again() -> None:
    """The close and revision of a cut reply, written but not committed (killed in between), are not written twice."""
    m1, m2 = user("m1", "a"), agent("m2", "the whole answer")
    cut = render_message(m1) + "## Agent · 2025-06-23 15:05 UTC\n\n<details><summary>Thought</summary>\n\nThin"
    first = plan_transcript([], len(cut.encode()), cut, [m1, m2])
    written = cut + first.append_text
    again = plan_transcript([], len(written.encode()), written, [m1, m2])
    assert (again.write, again.append_text) == ("none", "")
    assert again.commit == first.commit
