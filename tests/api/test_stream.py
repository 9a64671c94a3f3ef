"""The reply stream, pure: SSE framing, JSON-Patch deltas, and the typed events built from them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from convsync.api.models import (
    AgentFailed,
    MessageFinished,
    MessageStarted,
    PartDelta,
    StreamFinished,
    StreamStarted,
    ThreadRenamed,
)
from convsync.api.stream import SseEvent, apply_delta, sse_events, sse_lines, stream_events
from convsync.errors import ProtocolError, StreamInterrupted

MID = "a0190000-0000-4000-8000-000000000001"


def frame(event: str, payload: dict[str, Any], eol: str = "\r\n") -> str:
    return f"event: {event}{eol}data: {json.dumps(payload)}{eol}{eol}"


def content(seq: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"event_type": "message_content", "sequence_number": seq, "message_id": MID, "delta": delta}


FINAL = {
    "message_id": MID,
    "role": "agent",
    "content": [
        {"content_id": "c0", "kind": "thought", "complete": True, "thought": "No special context."},
        {
            "content_id": "c1",
            "kind": "text",
            "complete": True,
            "text": "I haven't got that.",
            "citations": [],
        },
    ],
    "created_at": "2025-06-05T15:40:49.732328+00:00",
    "updated_at": "2025-06-05T15:40:50.000000+00:00",
    "agent_metadata": {},
    "server_metadata": {},
    "parent_run_id": "run-1",
    "complete": True,
}


def transcript(eol: str = "\r\n", *, finished: bool = True, ping: bool = True) -> str:
    """A reply stream shaped like the captured one in spec §4."""
    events = [
        (
            "agent_ready",
            {"event_type": "agent_ready", "run_id": "run-1", "thread_id": "t-1", "agent_id": "a-1"},
        ),
        ("agent_event", {"event_type": "message_begin", "sequence_number": 0, "message_id": MID, "data": {}}),
        ("agent_event", content(1, {"op": "add", "path": "/message_id", "value": MID})),
        ("agent_event", content(2, {"op": "add", "path": "/role", "value": "agent"})),
        (
            "agent_event",
            content(
                3,
                {
                    "op": "add",
                    "path": "/content",
                    "value": [{"content_id": "c0", "kind": "thought", "complete": False, "thought": "N"}],
                },
            ),
        ),
        ("agent_event", content(4, {"op": "concat_string", "path": "/content/0/thought", "value": "o spe"})),
        (
            "agent_event",
            content(5, {"op": "concat_string", "path": "/content/0/thought", "value": "cial context."}),
        ),
        ("agent_event", content(6, {"op": "replace", "path": "/content/0/complete", "value": True})),
        (
            "agent_event",
            content(
                7,
                {
                    "op": "add",
                    "path": "/content/1",
                    "value": {
                        "content_id": "c1",
                        "kind": "text",
                        "complete": False,
                        "text": "I haven'",
                        "citations": [],
                    },
                },
            ),
        ),
        (
            "agent_event",
            content(8, {"op": "concat_string", "path": "/content/1/text", "value": "t got that."}),
        ),
        ("agent_event", content(9, {"op": "replace", "path": "/content/1/complete", "value": True})),
        ("agent_event", content(10, {"op": "add", "path": "/complete", "value": True})),
        (
            "agent_event",
            {"event_type": "message_end", "sequence_number": 11, "message_id": MID, "data": FINAL},
        ),
    ]
    if finished:
        events.append(("agent_event", {"event_type": "agent_finished", "run_id": "run-1", "thread_id": "t-1"}))
    body = ""
    for i, (name, payload) in enumerate(events):
        if ping and i == 3:
            body += f": ping - 2026-01-10 12:00:15.123456+00:00{eol}{eol}"
        body += frame(name, payload, eol)
    return body


def test_lines_split_on_crlf_lf_and_cr() -> None:
    """CRLF, LF and a lone CR each end one line."""
    assert list(sse_lines([b"a\r\nb\nc\rd\r\n"])) == ["a", "b", "c", "d"]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    """A CR at the end of one chunk and the LF at the start of the next make one line break, not two."""
    assert list(sse_lines([b"a\r", b"\nb\r\n"])) == ["a", "b"]


def test_multibyte_character_split_across_chunks_survives() -> None:
    """A UTF-8 character cut between two chunks is decoded whole."""
    raw = "data: héllo\n".encode()
    cut = raw.index("é".encode()) + 1
    assert list(sse_lines([raw[:cut], raw[cut:]])) == ["data: héllo"]


def test_unterminated_last_line_is_still_yielded() -> None:
    """A body cut in the middle of a line still hands out what arrived."""
    assert list(sse_lines(["a\nbc"])) == ["a", "bc"]


def test_comments_are_skipped_and_data_lines_joined() -> None:
    """Ping comments vanish, data lines join with a newline, and the default event name is message."""
    lines = [": ping - 2026", "data: one", "data:two", "", "event: x", "data: y", ""]
    assert list(sse_events(lines)) == [SseEvent("message", "one\ntwo"), SseEvent("x", "y")]


def test_event_without_data_or_blank_line_is_not_dispatched() -> None:
    """An event with no data line, or one cut before its blank line, is dropped."""
    assert list(sse_events(["event: lonely", "", "data: cut"])) == []


def test_stream_events_follow_the_spec_sequence() -> None:
    """The captured event sequence becomes started → message → text deltas → final message → finished."""
    events = list(stream_events([transcript().encode()]))
    kinds = [type(e) for e in events]
    assert kinds[0] is StreamStarted and kinds[1] is MessageStarted
    assert kinds[-2] is MessageFinished and kinds[-1] is StreamFinished
    assert events[0] == StreamStarted(run_id="run-1", thread_id="t-1")


def test_part_deltas_rebuild_each_part_text() -> None:
    """Concatenating the PartDelta texts of each part gives exactly that part's final text."""
    events = list(stream_events([transcript().encode()]))
    texts: dict[int, str] = {}
    for event in events:
        if isinstance(event, PartDelta):
            texts[event.index] = texts.get(event.index, "") + event.text
    assert texts == {0: "No special context.", 1: "I haven't got that."}


def test_first_delta_of_a_part_carries_its_opening_text() -> None:
    """A new part is announced by a delta holding the text it arrived with."""
    deltas = [e for e in stream_events([transcript().encode()]) if isinstance(e, PartDelta)]
    assert deltas[0] == PartDelta(MID, 0, "thought", "N")
    assert PartDelta(MID, 1, "text", "I haven'") in deltas


def test_final_message_comes_from_message_end() -> None:
    """MessageFinished carries message_end's data parsed as a Message."""
    final = next(e for e in stream_events([transcript().encode()]) if isinstance(e, MessageFinished))
    assert final.message.message_id == MID
    assert final.message.text == "I haven't got that."


def test_lf_only_stream_parses_the_same() -> None:
    """A server that ends lines with LF instead of CRLF gives the same events."""
    assert list(stream_events([transcript("\n").encode()])) == list(stream_events([transcript().encode()]))


def test_byte_by_byte_chunks_parse_the_same() -> None:
    """However the body is cut into chunks, the events are the same."""
    raw = transcript().encode()
    assert list(stream_events(raw[i : i + 1] for i in range(len(raw)))) == list(stream_events([raw]))


def test_stream_without_agent_finished_raises_interrupted() -> None:
    """A body that ends before agent_finished raises StreamInterrupted after the events that did arrive."""
    seen = []
    with pytest.raises(StreamInterrupted):
        seen.extend(stream_events([transcript(finished=False).encode()]))
    assert isinstance(seen[-1], MessageFinished)


def test_nothing_after_agent_finished_is_read() -> None:
    """The pipeline stops at agent_finished and does not pull further chunks."""

    def chunks() -> Any:
        yield transcript().encode()
        raise AssertionError("read past agent_finished")

    assert isinstance(list(stream_events(chunks()))[-1], StreamFinished)


def test_agent_error_and_rename_become_events() -> None:
    """agent_error becomes AgentFailed, thread_name_updated becomes ThreadRenamed; agent_finished follows."""
    body = (
        frame("agent_ready", {"event_type": "agent_ready", "run_id": "r", "thread_id": "t"})
        + frame(
            "agent_event",
            {"event_type": "thread_name_updated", "new_name": "New", "old_name": "Old", "reason": "auto"},
        )
        + frame(
            "agent_event",
            {
                "event_type": "agent_error",
                "error": {"error_id": "e", "code": "unexpected", "message": "boom"},
            },
        )
        + frame("agent_event", {"event_type": "agent_finished", "run_id": "r"})
    )
    events = list(stream_events([body]))
    assert events[1:] == [ThreadRenamed("New", "Old"), AgentFailed("unexpected", "boom"), StreamFinished("r")]


def test_unknown_event_types_are_ignored() -> None:
    """request_tool_execution and future event types carry nothing to mirror and are skipped."""
    body = frame("agent_event", {"event_type": "request_tool_execution", "tool_name": "x"}) + frame(
        "agent_event", {"event_type": "agent_finished", "run_id": "r"}
    )
    assert list(stream_events([body])) == [StreamFinished("r")]


def test_data_that_is_not_json_is_skipped() -> None:
    """An event whose data is not JSON is skipped; the stream is read on to agent_finished."""
    body = "event: agent_event\r\ndata: {nope\r\n\r\n" + frame(
        "agent_event", {"event_type": "agent_finished", "run_id": "r"}
    )
    assert list(stream_events([body])) == [StreamFinished("r")]


def test_unknown_op_stops_live_text_not_the_stream() -> None:
    """An unknown delta op stops that message's live text; message_end completes it and the stream ends."""
    body = transcript().replace(
        '"op": "concat_string", "path": "/content/0/thought", "value": "o spe"',
        ('"op": "concat_text", "path": "/content/0/thought", "value": "o spe"'),
    )
    events = list(stream_events([body]))
    texts = [e.text for e in events if isinstance(e, PartDelta) and e.index == 0]
    finished = [e.message for e in events if isinstance(e, MessageFinished)]
    assert "".join(texts) == "No special context."
    assert [m.text for m in finished] == ["I haven't got that."]
    assert isinstance(events[-1], StreamFinished)


def test_bad_path_without_message_end_data_finishes_without_the_message() -> None:
    """A stalled message whose message_end has no data yields no MessageFinished, and the stream still ends."""
    body = transcript().replace('"path": "/content/1/text"', '"path": "/content/7/text"')
    body = body.replace(json.dumps(FINAL), "{}")
    events = list(stream_events([body]))
    assert not [e for e in events if isinstance(e, MessageFinished)]
    assert isinstance(events[-1], StreamFinished)


@pytest.mark.parametrize(
    "delta",
    [
        {"op": "replace", "path": "", "value": "not a message"},
        {"op": "remove", "path": ""},
        {"op": "concat_string", "path": "/content/\u00b2/text", "value": "x"},  # a Unicode digit as index
    ],
)
def test_a_delta_that_unmakes_the_message_never_ends_the_stream(delta: dict[str, Any]) -> None:
    """A delta that replaces or removes the whole message, or indexes with a non-ASCII digit, before a
    message_end without data: no MessageFinished for it, and the stream is still read to agent_finished."""
    body = (
        frame("agent_event", {"event_type": "message_begin", "message_id": MID, "data": {}})
        + frame("agent_event", content(1, {"op": "add", "path": "/content", "value": [{"kind": "text"}]}))
        + frame("agent_event", content(2, delta))
        + frame("agent_event", {"event_type": "message_end", "message_id": MID, "data": {}})
        + frame("agent_event", {"event_type": "agent_finished", "run_id": "r"})
    )
    events = list(stream_events([body]))
    assert not [e for e in events if isinstance(e, MessageFinished)]
    assert isinstance(events[-1], StreamFinished)


def test_text_only_in_message_end_is_handed_out_before_it() -> None:
    """Text the deltas never carried is emitted as a PartDelta just before MessageFinished."""
    body = (
        frame("agent_event", {"event_type": "message_begin", "message_id": MID, "data": {}})
        + frame("agent_event", {"event_type": "message_end", "message_id": MID, "data": FINAL})
        + frame("agent_event", {"event_type": "agent_finished", "run_id": "r"})
    )
    deltas = [e for e in stream_events([body]) if isinstance(e, PartDelta)]
    assert [d.text for d in deltas] == ["No special context.", "I haven't got that."]


# --- JSON Patch ---------------------------------------------------------------------------------------------


def test_concat_string_appends_and_starts_missing_keys_empty() -> None:
    """concat_string appends to the string at the path, treating a missing key as empty."""
    doc = {"content": [{"text": "ab"}]}
    doc = apply_delta(doc, {"op": "concat_string", "path": "/content/0/text", "value": "cd"})
    doc = apply_delta(doc, {"op": "concat_string", "path": "/content/0/extra", "value": "x"})
    assert doc == {"content": [{"text": "abcd", "extra": "x"}]}


def test_add_into_array_inserts_and_dash_appends() -> None:
    """add with an index inserts before it; '-' appends (RFC 6902)."""
    doc = {"a": [1, 3]}
    doc = apply_delta(doc, {"op": "add", "path": "/a/1", "value": 2})
    doc = apply_delta(doc, {"op": "add", "path": "/a/-", "value": 4})
    assert doc == {"a": [1, 2, 3, 4]}


def test_remove_replace_move_copy_test_and_inc() -> None:
    """The remaining RFC 6902 ops and the server's inc behave as specified."""
    doc: Any = {"a": {"b": 1}, "c": [5], "n": 1}
    doc = apply_delta(doc, {"op": "replace", "path": "/a/b", "value": 2})
    doc = apply_delta(doc, {"op": "copy", "from": "/a", "path": "/d"})
    doc = apply_delta(doc, {"op": "move", "from_": "/c/0", "path": "/e"})
    doc = apply_delta(doc, {"op": "remove", "path": "/a"})
    doc = apply_delta(doc, {"op": "test", "path": "/d/b", "value": 2})
    doc = apply_delta(doc, {"op": "inc", "path": "/n", "value": 2})
    assert doc == {"c": [], "n": 3, "d": {"b": 2}, "e": 5}


def test_pointer_escapes_are_decoded() -> None:
    """~1 and ~0 in a pointer mean '/' and '~'."""
    doc = apply_delta({"a/b": {"~": 0}}, {"op": "replace", "path": "/a~1b/~0", "value": 1})
    assert doc == {"a/b": {"~": 1}}


def test_failed_test_op_and_bad_path_are_protocol_errors() -> None:
    """A failing test op, a missing parent and an unknown op raise ProtocolError."""
    for delta in (
        {"op": "test", "path": "/a", "value": 2},
        {"op": "add", "path": "/x/y", "value": 1},
        {"op": "explode", "path": "/a"},
        {"op": "replace", "path": "/missing", "value": 1},
    ):
        with pytest.raises(ProtocolError):
            apply_delta({"a": 1}, delta)


def test_deltas_rebuild_message_end_data() -> None:
    """Applying the captured deltas in order yields message_end's content exactly."""
    doc: Any = {}
    for line in transcript().split("\r\n"):
        if line.startswith("data: "):
            payload = json.loads(line[6:])
            if payload["event_type"] == "message_content":
                doc = apply_delta(doc, payload["delta"])
    assert doc["content"] == FINAL["content"]
