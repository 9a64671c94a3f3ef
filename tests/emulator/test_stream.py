"""The SSE stream route, read as raw bytes: framing, event order, deltas, and what is stored when."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from convsync.emulator import EmulatorServer
from tests.emulator.sse import apply_delta, data_events, split_events, text_of
from tests.waiting import wait_until

PING = re.compile(r"^: ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$")
SSE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def stream_raw(api: httpx.Client, conv: str, prompt: str) -> bytes:
    with api.stream("POST", f"{conv}/stream", json={"content": prompt}) as response:
        assert response.status_code == 200
        return b"".join(response.iter_raw())


@pytest.fixture
def raw(api: httpx.Client, emu: EmulatorServer, conv: str) -> bytes:
    """One reply streamed with frequent pings: a thought, then four text deltas 80 ms apart."""
    emu.configure(ping_interval=0.05)
    return stream_raw(api, conv, "/slow 4 80")


def agent_events(raw: bytes) -> list[dict[str, Any]]:
    return [payload for _, payload in data_events(raw)]


def test_lines_end_with_crlf(raw: bytes) -> None:
    """Every line ends with ``\\r\\n`` and each event with a blank line."""
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n\r\n")


def test_events_have_only_event_and_data_lines(raw: bytes) -> None:
    """An event is ``event:`` then one ``data:`` line: no ``id:`` and no ``retry:``."""
    for lines in split_events(raw):
        if lines[0].startswith(":"):
            continue
        assert len(lines) == 2
        assert lines[0] in ("event: agent_ready", "event: agent_event")
        assert lines[1].startswith("data: {")


def test_keep_alive_comments_are_pings_with_a_timestamp(raw: bytes) -> None:
    """Keep-alives are ``: ping - <UTC datetime>`` comments."""
    comments = [lines for lines in split_events(raw) if lines[0].startswith(":")]
    assert comments, "a slow reply with a 50 ms ping interval must carry pings"
    assert all(len(lines) == 1 and PING.match(lines[0]) for lines in comments)


def test_data_is_json_dumps_with_default_spacing(raw: bytes) -> None:
    """``data:`` payloads are ``json.dumps`` output, with ``", "`` and ``": "`` separators."""
    for lines in split_events(raw):
        if not lines[0].startswith(":"):
            data = lines[1][len("data: ") :]
            assert data == json.dumps(json.loads(data))


def test_agent_ready_comes_first_and_agent_finished_last(raw: bytes) -> None:
    """The event order is agent_ready, message_begin, message_content…, message_end, agent_finished."""
    named = data_events(raw)
    assert named[0][0] == "agent_ready"
    assert all(name == "agent_event" for name, _ in named[1:])
    types = [payload["event_type"] for _, payload in named]
    assert types[:2] == ["agent_ready", "message_begin"]
    assert types[-2:] == ["message_end", "agent_finished"]
    assert set(types[2:-2]) == {"message_content"}


def test_ids_and_timestamps_of_the_run(raw: bytes, aid: str, cid: str) -> None:
    """agent_ready and agent_finished name the run, thread and agent; SSE timestamps use ``+00:00``."""
    events = agent_events(raw)
    ready, finished = events[0], events[-1]
    assert ready["thread_id"] == finished["thread_id"] == cid
    assert ready["agent_id"] == finished["agent_id"] == aid
    assert ready["run_id"] == finished["run_id"]
    assert all(SSE_TIME.match(e["timestamp"]) for e in events)


def test_sequence_numbers_count_up_from_zero(raw: bytes) -> None:
    """message_begin is 0, contents 1…n, message_end n+1, all for one message id."""
    message_events = [e for e in agent_events(raw) if "sequence_number" in e]
    assert [e["sequence_number"] for e in message_events] == list(range(len(message_events)))
    assert len({e["message_id"] for e in message_events}) == 1


def test_first_deltas_add_every_top_level_key(raw: bytes) -> None:
    """The first deltas ``add`` each top-level key; the first part rides inside ``/content``."""
    deltas = [e["delta"] for e in agent_events(raw) if e["event_type"] == "message_content"]
    assert [(d["op"], d["path"]) for d in deltas[:8]] == [
        ("add", "/message_id"),
        ("add", "/role"),
        ("add", "/content"),
        ("add", "/created_at"),
        ("add", "/agent_metadata"),
        ("add", "/server_metadata"),
        ("add", "/parent_run_id"),
        ("add", "/complete"),
    ]
    first_part = deltas[2]["value"][0]
    assert first_part["kind"] == "thought" and first_part["complete"] is False


def test_text_arrives_as_a_part_add_then_concat_string(raw: bytes) -> None:
    """The text part is added whole with its first characters, then grows by ``concat_string``."""
    deltas = [e["delta"] for e in agent_events(raw) if e["event_type"] == "message_content"]
    add = next(d for d in deltas if d["path"] == "/content/1")
    assert add["op"] == "add" and add["value"]["kind"] == "text" and add["value"]["text"] == "Part 1 of 4. "
    concats = [d["value"] for d in deltas if d["path"] == "/content/1/text"]
    assert concats == ["Part 2 of 4. ", "Part 3 of 4. ", "Part 4 of 4. "]
    assert all(d["op"] == "concat_string" for d in deltas if d["path"] == "/content/1/text")
    assert deltas[-1] == {"op": "replace", "path": "/complete", "value": True}


def test_deltas_rebuild_message_end_exactly(raw: bytes) -> None:
    """Applying every delta to ``{}`` rebuilds message_end's content and text exactly."""
    events = agent_events(raw)
    message: dict[str, Any] = {}
    for event in events:
        if event["event_type"] == "message_content":
            apply_delta(message, event["delta"])
    final = next(e for e in events if e["event_type"] == "message_end")["data"]
    assert text_of(message) == text_of(final) == "".join(f"Part {i} of 4. " for i in range(1, 5))
    assert message["content"] == final["content"]
    assert message["complete"] is True and message["message_id"] == final["message_id"]


def test_message_end_carries_the_full_message(raw: bytes) -> None:
    """message_end's ``data`` is the whole final message with isoformat timestamps."""
    final = next(e for e in agent_events(raw) if e["event_type"] == "message_end")["data"]
    assert final["role"] == "agent" and final["complete"] is True
    assert [p["kind"] for p in final["content"]] == ["thought", "text"]
    assert SSE_TIME.match(final["created_at"]) and SSE_TIME.match(final["updated_at"])


def test_response_headers(api: httpx.Client, conv: str) -> None:
    """The stream is ``text/event-stream; charset=utf-8`` with no-store and no proxy buffering."""
    with api.stream("POST", f"{conv}/stream", json={"content": "hi"}) as response:
        response.read()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["connection"] == "keep-alive"


def test_streamed_reply_is_committed_as_sent(api: httpx.Client, conv: str) -> None:
    """After the stream, GET messages holds the user prompt and message_end's message."""
    raw = stream_raw(api, conv, "committed?")
    final = next(e for e in agent_events(raw) if e["event_type"] == "message_end")["data"]
    stored = api.get(f"{conv}/messages").json()["data"]
    assert [m["role"] for m in stored] == ["user", "agent"]
    assert stored[1]["message_id"] == final["message_id"] and stored[1]["content"] == final["content"]


def test_user_message_is_stored_before_the_reply_streams(
    api: httpx.Client, emu: EmulatorServer, conv: str, cid: str
) -> None:
    """When agent_ready arrives the prompt is already stored and the reply is not."""
    with api.stream("POST", f"{conv}/stream", json={"content": "/slow 3 100"}) as response:
        lines: Iterator[str] = response.iter_lines()
        assert next(lines) == "event: agent_ready"
        assert emu.user_messages(cid) == ["/slow 3 100"]
        assert [m["role"] for m in emu.messages(cid)] == ["user"]
        assert any(line == "event: agent_event" for line in lines)


def test_client_disconnect_cancels_the_run(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """A client that goes away mid-reply cancels the run: the agent message is never committed."""
    with api.stream("POST", f"{conv}/stream", json={"content": "/slow 30 100"}) as response:
        for line in response.iter_lines():
            if "concat_string" in line:
                break
    wait_until(lambda: emu.active_runs == 0, what="the cancelled run to end")
    assert [m["role"] for m in emu.messages(cid)] == ["user"]


def test_failing_run_streams_agent_error_then_agent_finished(api: httpx.Client, conv: str, cid: str) -> None:
    """``/fail`` streams agent_error (the envelope's fields) and then agent_finished, no message."""
    events = agent_events(stream_raw(api, conv, "/fail"))
    assert [e["event_type"] for e in events] == ["agent_ready", "agent_error", "agent_finished"]
    error = events[1]
    assert set(error["error"]) == {"error_id", "code", "message"} and error["context"] == {}
    assert error["thread_id"] == cid


def test_stream_does_not_auto_rename(api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str) -> None:
    """Unlike the sync route, a first streamed message leaves the name alone."""
    stream_raw(api, conv, "name me please")
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "A test conversation"


def test_stream_to_unknown_conversation_is_a_json_404(api: httpx.Client, aid: str) -> None:
    """A missing conversation answers the JSON envelope, not a stream."""
    response = api.post(f"/agents/{aid}/conversations/{aid}/stream", json={"content": "x"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_stream_without_content_is_422(api: httpx.Client, conv: str) -> None:
    """The stream route validates its body like the sync route."""
    response = api.post(f"{conv}/stream", json={})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Request validation failed: body -> content: Field required"


def test_stream_log_records_every_text_delta(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """``stream_log`` holds each emitted text delta with its time; together they are the reply text."""
    raw = stream_raw(api, conv, "/slow 3 20")
    final = next(e for e in agent_events(raw) if e["event_type"] == "message_end")["data"]
    records = [r for r in emu.stream_log if r.conversation_id == cid]
    assert [r.text for r in records] == ["Part 1 of 3. ", "Part 2 of 3. ", "Part 3 of 3. "]
    assert {r.message_id for r in records} == {final["message_id"]}
    assert [r.emitted for r in records] == sorted(r.emitted for r in records)
