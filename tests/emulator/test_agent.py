"""The scripted agent's commands, driven through the sync route (and the stream where timing matters)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from convsync.emulator import EmulatorServer
from tests.emulator.sse import data_events, text_of


def ask(api: httpx.Client, conv: str, prompt: str) -> dict[str, Any]:
    """The agent's reply message to ``prompt``."""
    response = api.post(f"{conv}/messages", json={"content": prompt})
    assert response.status_code == 200, response.text
    reply = response.json()["data"][-1]
    assert reply["role"] == "agent"
    return dict(reply)


def test_echo_mentions_the_conversation_files(api: httpx.Client, conv: str) -> None:
    """With files present, the default reply lists their names and sizes."""
    api.post(f"{conv}/files", files=[("files", ("a.txt", b"abc"))])
    assert text_of(ask(api, conv, "hi")) == "You said: hi\nFiles in this conversation: a.txt (3 bytes)"


def test_files_command_lists_names_and_sizes(api: httpx.Client, conv: str) -> None:
    """``/files`` lists each file with its size."""
    api.post(f"{conv}/files", files=[("files", ("a.txt", b"abc")), ("files", ("b.csv", b"x,y\n"))])
    assert text_of(ask(api, conv, "/files")) == "Files in this conversation:\n- a.txt (3 bytes)\n- b.csv (4 bytes)"


def test_files_command_without_files(api: httpx.Client, conv: str) -> None:
    """``/files`` in an empty conversation says so."""
    assert text_of(ask(api, conv, "/files")) == "No files in this conversation."


def test_frame_command_turns_a_csv_into_a_frame(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """``/frame <file_ref> [<name>]`` makes a data frame, named by the argument."""
    api.post(f"{conv}/files", files=[("files", ("sales q3.csv", b"a,b\n1,x\n2,y\n"))])
    reply = text_of(ask(api, conv, '/frame "sales q3.csv" quarterly'))
    assert reply.startswith("Created data frame `quarterly` from sales q3.csv: 2 rows x 2 columns")
    assert emu.data_frame_names(cid) == ["quarterly"]


def test_frame_name_defaults_to_the_sanitised_stem(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """Without a name the frame is called after the file stem, with ``_`` for other characters."""
    api.post(f"{conv}/files", files=[("files", ("sales q3.csv", b"a\n1\n"))])
    ask(api, conv, '/frame "sales q3.csv"')
    assert emu.data_frame_names(cid) == ["sales_q3"]


def test_frame_from_an_unknown_file_explains(api: httpx.Client, conv: str) -> None:
    """``/frame`` of a missing file answers with an explanation and makes nothing."""
    assert text_of(ask(api, conv, "/frame ghost.csv")) == "No file named ghost.csv in this conversation."


def test_frame_from_a_text_file_is_refused(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """Only CSV and Parquet files become frames."""
    api.post(f"{conv}/files", files=[("files", ("notes.txt", b"hello"))])
    assert "neither a CSV nor a Parquet file" in text_of(ask(api, conv, "/frame notes.txt"))
    assert emu.data_frame_names(cid) == []


def test_bigframe_synthesises_a_deterministic_frame(api: httpx.Client, conv: str) -> None:
    """``/bigframe <name> <rows> [<cols>]`` makes int, float, string, bool, timestamp columns, cycling."""
    ask(api, conv, "/bigframe bench 3 6")
    [item] = api.get(f"{conv}/data-frames", params={"num_samples": -1}).json()
    assert item["column_headers"] == ["id", "value", "label", "flag", "at", "id_1"]
    assert item["input_id_type"] == "in_memory"
    assert item["sample_rows"][1] == [1, 0.25, "item-1", False, "2026-01-01T00:00:01", 2]


def test_write_command_produces_an_output_file(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """``/write <filename> <text…>`` puts a file with exactly that text into the conversation."""
    assert text_of(ask(api, conv, "/write out.md # Title\nbody")) == "Wrote out.md (12 bytes)."
    assert api.get(f"{conv}/files/download/", params={"file_ref": "out.md"}).content == b"# Title\nbody"
    [item] = api.get(f"{conv}/files").json()
    assert item["mime_type"] == "text/markdown"
    assert emu.file_hashes(cid)["out.md"] == hashlib.sha256(b"# Title\nbody").hexdigest()


def test_write_command_refuses_bad_names(api: httpx.Client, conv: str) -> None:
    """``/write`` applies the upload name rules."""
    assert text_of(ask(api, conv, "/write ../x.txt hi")).startswith("Cannot write the file:")
    assert api.get(f"{conv}/files").json() == []


def test_bigfile_command_writes_deterministic_bytes(
    api: httpx.Client, emu: EmulatorServer, conv: str, cid: str
) -> None:
    """``/bigfile <filename> <MiB>`` writes that many MiB, identical every time."""
    assert text_of(ask(api, conv, "/bigfile big.bin 2")) == "Wrote big.bin (2097152 bytes)."
    first = emu.file_hashes(cid)["big.bin"]
    ask(api, conv, "/bigfile big.bin 2")
    assert emu.file_hashes(cid)["big.bin"] == first
    assert emu.file_path(cid, "big.bin").read_bytes().startswith(b"convsync bigfile block 0000000000\n")


def test_slow_command_streams_n_deltas_with_the_delay(api: httpx.Client, emu: EmulatorServer, conv: str) -> None:
    """``/slow <chunks> <delay_ms>`` sends that many text deltas spaced by the delay."""
    with api.stream("POST", f"{conv}/stream", json={"content": "/slow 5 60"}) as response:
        raw = b"".join(response.iter_raw())
    texts = [
        e["delta"]["value"]
        for _, e in data_events(raw)
        if e["event_type"] == "message_content"
        and e["delta"]["path"].startswith("/content/1")
        and isinstance(e["delta"]["value"], str)
    ]
    assert len(texts) == 4  # the add of the part carries the first delta
    times = [r.emitted for r in emu.stream_log]
    assert len(times) == 5
    assert times[-1] - times[0] >= 4 * 0.06 * 0.9


def test_fail_command_fails_the_run(api: httpx.Client, conv: str) -> None:
    """``/fail`` gives no agent message (the sync route still answers 200)."""
    assert [m["role"] for m in api.post(f"{conv}/messages", json={"content": "/fail"}).json()["data"]] == ["user"]


def test_tool_command_adds_a_finished_tool_call(api: httpx.Client, conv: str) -> None:
    """``/tool`` replies with a thought, a tool_call part and text."""
    reply = ask(api, conv, "/tool")
    assert [p["kind"] for p in reply["content"]] == ["thought", "tool_call", "text"]
    tool = reply["content"][1]
    assert tool["status"] == "finished" and json.loads(tool["arguments_raw"]) == {"city": "Oslo"}
    assert tool["discovered_at"].endswith("Z")


def test_tool_call_status_changes_by_replace_in_the_stream(api: httpx.Client, conv: str) -> None:
    """The streamed tool part starts ``running`` and is replaced to ``finished``."""
    with api.stream("POST", f"{conv}/stream", json={"content": "/tool"}) as response:
        raw = b"".join(response.iter_raw())
    deltas = [e["delta"] for _, e in data_events(raw) if e["event_type"] == "message_content"]
    assert next(d for d in deltas if d["path"] == "/content/1")["value"]["status"] == "running"
    assert {"op": "replace", "path": "/content/1/status", "value": "finished"} in deltas


def test_chart_command_adds_a_vega_chart(api: httpx.Client, conv: str) -> None:
    """``/chart`` replies with a vega-lite chart part."""
    chart = ask(api, conv, "/chart")["content"][1]
    assert chart["kind"] == "vega_chart" and chart["sub_type"] == "vega-lite"
    assert json.loads(chart["chart_spec_raw"])["mark"] == "bar"


def test_attach_command_adds_an_attachment_of_a_file(api: httpx.Client, conv: str) -> None:
    """``/attach <file_ref>`` replies with an attachment part pointing at the file."""
    [item] = api.post(f"{conv}/files", files=[("files", ("pic.png", b"\x89PNG"))]).json()
    attachment = ask(api, conv, "/attach pic.png")["content"][1]
    assert attachment["kind"] == "attachment" and attachment["mime_type"] == "image/png"
    assert attachment["uri"] == f"agent-server-file://{item['file_id']}"


def test_rename_command_renames_and_announces_it(
    api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str
) -> None:
    """``/rename <name>`` renames the conversation and streams thread_name_updated before agent_finished."""
    with api.stream("POST", f"{conv}/stream", json={"content": "/rename Budget 2027"}) as response:
        raw = b"".join(response.iter_raw())
    events = [e for _, e in data_events(raw)]
    update = next(e for e in events if e["event_type"] == "thread_name_updated")
    assert (update["old_name"], update["new_name"], update["reason"]) == (
        "A test conversation",
        "Budget 2027",
        "manual",
    )
    assert events[-1]["event_type"] == "agent_finished"
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "Budget 2027"


def test_rename_in_the_first_sync_message_wins_over_auto_naming(
    api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str
) -> None:
    """A first sync message that renames keeps the agent's name (no auto-title on top)."""
    ask(api, conv, "/rename Chosen")
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "Chosen"


def test_unknown_command_is_echoed(api: httpx.Client, conv: str) -> None:
    """A slash word that is no command gets the default reply."""
    assert text_of(ask(api, conv, "/nope x")) == "You said: /nope x"
