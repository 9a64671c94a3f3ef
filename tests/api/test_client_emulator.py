"""AgentClient against the emulator over real loopback HTTP: every route and error class, with faults."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from convsync.api.client import AgentClient, RateLimit
from convsync.api.models import (
    AgentFailed,
    MessageFinished,
    MessageStarted,
    PartDelta,
    StreamFinished,
    StreamStarted,
    TextPart,
    ThoughtPart,
)
from convsync.api.retry import Backoff
from convsync.api.stream import StreamAssembler, sse_events, sse_lines
from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from convsync.errors import (
    AuthError,
    BadRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    StreamInterrupted,
    TransientError,
)
from tests.waiting import wait_until

KEY = "s4w_test-key"
MISSING = "00000000-0000-4000-8000-000000000000"
FAST = Backoff(base=0.01, cap=0.05, max_wait=5.0)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    """One emulator for the module's default-option tests (faults are cleared around each test)."""
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


@pytest.fixture
def clean(emu: EmulatorServer) -> Iterator[EmulatorServer]:
    emu.clear_faults()
    yield emu
    emu.clear_faults()


@pytest.fixture
def client(clean: EmulatorServer) -> Iterator[AgentClient]:
    with AgentClient(clean.base_url, KEY, rate_limit=None, backoff=FAST) as c:
        yield c


@pytest.fixture
def aid(clean: EmulatorServer) -> str:
    return clean.agent_id("Demo Agent")


@pytest.fixture
def cid(client: AgentClient, aid: str) -> str:
    return client.create_conversation(aid, "test conversation").id


def requests_to(emu: EmulatorServer, method: str, suffix: str, within: str = "") -> list[Any]:
    """The logged requests with this method whose path ends in ``suffix`` and contains ``within``."""
    return [
        r for r in list(emu.requests) if r.method == method and r.path.rstrip("/").endswith(suffix) and within in r.path
    ]


# --- agents -------------------------------------------------------------------------------------------------


def test_list_agents_finds_the_seeded_agent(client: AgentClient, aid: str) -> None:
    """GET /agents returns the seeded Demo Agent with its id."""
    assert aid in {a.id for a in client.list_agents()}


def test_list_agents_filters_by_name_prefix(client: AgentClient, aid: str) -> None:
    """name= keeps agents whose name starts with it, case-insensitively."""
    assert [a.id for a in client.list_agents(name="demo")] == [aid]
    assert client.list_agents(name="zzz-nobody") == []


def test_get_agent_by_id(client: AgentClient, aid: str) -> None:
    """GET /agents/{aid} returns that agent."""
    assert client.get_agent(aid).name == "Demo Agent"


def test_unknown_agent_is_not_found(client: AgentClient) -> None:
    """A well-formed but unknown agent id raises NotFound with the envelope's code and error_id."""
    with pytest.raises(NotFound) as info:
        client.get_agent(MISSING)
    assert info.value.code == "not_found" and info.value.error_id


def test_non_uuid_id_is_bad_request(client: AgentClient) -> None:
    """A non-UUID id raises BadRequest (400 bad_request)."""
    with pytest.raises(BadRequest) as info:
        client.get_agent("not-a-uuid")
    assert (info.value.status, info.value.code) == (400, "bad_request")


def test_wrong_key_is_an_auth_error_without_error_id(clean: EmulatorServer) -> None:
    """The gateway's 401 for a wrong key is AuthError; its envelope has no error_id; the key isn't shown."""
    wrong = "s4w_wrong-key-4711"
    with AgentClient(clean.base_url, wrong, rate_limit=None) as client, pytest.raises(AuthError) as info:
        client.list_agents()
    assert info.value.status == 401 and info.value.error_id is None
    assert wrong not in str(info.value)


def test_trailing_slash_base_url_works(clean: EmulatorServer, aid: str) -> None:
    """A base URL ending in '/' reaches the same routes."""
    with AgentClient(clean.base_url + "/", KEY, rate_limit=None) as client:
        assert client.get_agent(aid).id == aid


# --- conversations ------------------------------------------------------------------------------------------


def test_create_list_delete_conversation(client: AgentClient, aid: str) -> None:
    """A created conversation is listed (newest first) and gone after delete, which returns it."""
    first = client.create_conversation(aid, "first")
    second = client.create_conversation(aid, "second")
    listed = [c.id for c in client.list_conversations(aid)]
    assert listed.index(second.id) < listed.index(first.id)
    assert client.delete_conversation(aid, first.id).id == first.id
    assert first.id not in {c.id for c in client.list_conversations(aid)}


def test_second_delete_is_not_found(client: AgentClient, aid: str, cid: str) -> None:
    """Deleting a conversation twice raises NotFound the second time."""
    client.delete_conversation(aid, cid)
    with pytest.raises(NotFound):
        client.delete_conversation(aid, cid)


def test_delete_whose_answer_was_lost_still_succeeds(client: AgentClient, clean: EmulatorServer, aid: str) -> None:
    """A DELETE applied by the server whose answer is cut by a reset is retried, finds 404 and succeeds."""
    conv = client.create_conversation(aid, "to delete")
    clean.set_faults([FaultRule(method="DELETE", path=r"/conversations/", reset=True, after=True, count=1)])
    assert client.delete_conversation(aid, conv.id).id == conv.id
    wait_until(lambda: len(requests_to(clean, "DELETE", conv.id)) == 2, what="two DELETEs logged")


def test_conversations_of_unknown_agent_are_not_found(client: AgentClient) -> None:
    """Listing conversations of an unknown agent raises NotFound."""
    with pytest.raises(NotFound):
        client.list_conversations(MISSING)


# --- messages -----------------------------------------------------------------------------------------------


def test_post_message_returns_the_whole_history(client: AgentClient, aid: str, cid: str) -> None:
    """The synchronous post returns every message: the user's prompt and the agent's answer."""
    history = client.post_message(aid, cid, "hello there")
    assert [m.role for m in history] == ["user", "agent"]
    assert history[0].text == "hello there"
    assert "You said: hello there" in history[-1].text
    assert isinstance(history[-1].content[0], ThoughtPart)


def test_get_messages_oldest_first(client: AgentClient, aid: str, cid: str) -> None:
    """GET messages lists the history oldest first."""
    client.post_message(aid, cid, "one")
    client.post_message(aid, cid, "two")
    texts = [m.text for m in client.get_messages(aid, cid) if m.role == "user"]
    assert texts == ["one", "two"]


def test_messages_of_unknown_conversation_are_not_found(client: AgentClient, aid: str) -> None:
    """GET messages of an unknown conversation raises NotFound."""
    with pytest.raises(NotFound):
        client.get_messages(aid, MISSING)


def test_stream_reconstruction_equals_message_end(client: AgentClient, aid: str, cid: str) -> None:
    """Concatenated PartDeltas of each part equal the final message's parts, and the stored message too."""
    events = list(client.stream_message(aid, cid, "stream me"))
    assert isinstance(events[0], StreamStarted) and isinstance(events[-1], StreamFinished)
    assert any(isinstance(e, MessageStarted) for e in events)
    final = next(e.message for e in events if isinstance(e, MessageFinished))
    rebuilt: dict[int, str] = {}
    for event in events:
        if isinstance(event, PartDelta):
            rebuilt[event.index] = rebuilt.get(event.index, "") + event.text
    expected = {
        i: (p.text if isinstance(p, TextPart) else p.thought)
        for i, p in enumerate(final.content)
        if isinstance(p, TextPart | ThoughtPart)
    }
    assert rebuilt == expected
    assert "You said: stream me" in final.text
    stored = client.get_messages(aid, cid)[-1]
    assert (stored.message_id, stored.text) == (final.message_id, final.text)


def test_raw_stream_deltas_rebuild_message_end_exactly(clean: EmulatorServer, aid: str, cid: str) -> None:
    """The raw SSE bytes use CRLF framing, and applying their deltas yields message_end's data, part by part."""
    url = f"{clean.base_url}/agents/{aid}/conversations/{cid}/stream"
    headers = {"Authorization": f"Bearer {KEY}"}
    raw = httpx.post(url, json={"content": "rebuild me"}, headers=headers, timeout=30).content
    assert b"\r\n\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")
    assembler = StreamAssembler()
    ends: dict[str, Any] = {}
    for event in sse_events(sse_lines([raw])):
        payload = json.loads(event.data)
        if payload.get("event_type") == "message_end":
            ends[payload["message_id"]] = payload["data"]
        list(assembler.feed(event))
    assert assembler.finished and ends
    for message_id, final in ends.items():
        rebuilt = assembler.messages[message_id]
        assert rebuilt["content"] == final["content"]
        assert {k: rebuilt[k] for k in ("role", "complete")} == {k: final[k] for k in ("role", "complete")}


def test_stream_agent_error_is_reported_then_finished(client: AgentClient, aid: str, cid: str) -> None:
    """/fail makes the agent fail: AgentFailed arrives, then StreamFinished."""
    events = list(client.stream_message(aid, cid, "/fail"))
    failed = [e for e in events if isinstance(e, AgentFailed)]
    assert failed and isinstance(events[-1], StreamFinished)


def test_stream_cut_raises_stream_interrupted(client: AgentClient, clean: EmulatorServer, aid: str, cid: str) -> None:
    """A stream the server cuts after a few events raises StreamInterrupted, and is not re-sent."""
    clean.set_faults([FaultRule(method="POST", path=r"/stream$", stream_cut_after=3, count=1)])
    seen: list[Any] = []
    with pytest.raises(StreamInterrupted):
        seen.extend(client.stream_message(aid, cid, "/slow 20 5"))
    assert seen and not any(isinstance(e, StreamFinished) for e in seen)
    # A re-sent stream would have stored the prompt twice.
    assert [m.text for m in client.get_messages(aid, cid) if m.role == "user"] == ["/slow 20 5"]


def test_closing_a_stream_early_ends_the_request(
    client: AgentClient, clean: EmulatorServer, aid: str, cid: str
) -> None:
    """Closing the event generator after the first event closes the connection; the server sees it end."""
    events = client.stream_message(aid, cid, "/slow 500 20")  # 10 s if nobody hung up
    assert isinstance(next(events), StreamStarted)
    events.close()  # type: ignore[attr-defined]
    # The emulator logs a request when its handler ends: here, long before the 10 s reply would have.
    wait_until(lambda: requests_to(clean, "POST", "/stream", cid), timeout=5, what="the server to end the stream")


def test_stream_to_unknown_conversation_is_not_found(client: AgentClient, aid: str) -> None:
    """POST …/stream on an unknown conversation raises NotFound (a JSON 404, not SSE)."""
    with pytest.raises(NotFound):
        list(client.stream_message(aid, MISSING, "hi"))


# --- files --------------------------------------------------------------------------------------------------


def test_upload_list_download_round_trip(
    client: AgentClient, clean: EmulatorServer, aid: str, cid: str, tmp_path: Path
) -> None:
    """A few-MiB file uploads, lists with its sha256 and downloads byte-identical."""
    data = os.urandom(3 * 1024 * 1024 + 123)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "blob.bin").write_bytes(data)
    progress: list[tuple[int, int]] = []
    uploaded = client.upload_files(
        aid, cid, [("blob.bin", tmp_path / "blob.bin")], lambda d, t: progress.append((d, t))
    )
    assert [f.file_ref for f in uploaded] == ["blob.bin"] and progress[-1] == (len(data), len(data))
    listed = {f.file_ref: f for f in client.list_files(aid, cid)}
    assert listed["blob.bin"].sha256 == digest and listed["blob.bin"].size == len(data)
    assert clean.file_hashes(cid)["blob.bin"] == digest
    out = io.BytesIO()
    assert client.download_file(aid, cid, "blob.bin", out) == len(data)
    assert hashlib.sha256(out.getvalue()).hexdigest() == digest


def test_upload_of_several_files_and_odd_names(client: AgentClient, aid: str, cid: str, tmp_path: Path) -> None:
    """Several files go in one request; names with spaces, quotes and non-ASCII survive."""
    names = ["a b.csv", 'q"uote.txt', "résumé.md"]
    for i, name in enumerate(names):
        (tmp_path / f"f{i}").write_text(name)
    client.upload_files(aid, cid, [(n, tmp_path / f"f{i}") for i, n in enumerate(names)])
    assert {f.file_ref for f in client.list_files(aid, cid)} >= set(names)
    for name in names:
        out = io.BytesIO()
        client.download_file(aid, cid, name, out)
        assert out.getvalue() == name.encode()


def test_same_name_upload_replaces(client: AgentClient, aid: str, cid: str, tmp_path: Path) -> None:
    """Uploading an existing name replaces the file (new file_id, new content)."""
    (tmp_path / "v1").write_bytes(b"one")
    (tmp_path / "v2").write_bytes(b"two!")
    first = client.upload_files(aid, cid, [("doc.txt", tmp_path / "v1")])[0]
    second = client.upload_files(aid, cid, [("doc.txt", tmp_path / "v2")])[0]
    assert first.file_id != second.file_id
    listed = [f for f in client.list_files(aid, cid) if f.file_ref == "doc.txt"]
    assert len(listed) == 1 and listed[0].size == 4


def test_download_of_unknown_file_is_not_found(client: AgentClient, aid: str, cid: str) -> None:
    """Downloading a file_ref that doesn't exist raises NotFound."""
    with pytest.raises(NotFound):
        client.download_file(aid, cid, "nope.txt", io.BytesIO())


def test_agent_output_file_downloads(client: AgentClient, aid: str, cid: str) -> None:
    """A file the agent writes (/write) is listed and downloadable."""
    client.post_message(aid, cid, "/write out.txt hello file")
    assert "out.txt" in {f.file_ref for f in client.list_files(aid, cid)}
    out = io.BytesIO()
    client.download_file(aid, cid, "out.txt", out)
    assert b"hello file" in out.getvalue()


def test_download_survives_a_cut_body(
    client: AgentClient, clean: EmulatorServer, aid: str, cid: str, tmp_path: Path
) -> None:
    """A download whose body is cut mid-way starts over into the same (seekable) file and ends complete."""
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "cut.bin").write_bytes(data)
    client.upload_files(aid, cid, [("cut.bin", tmp_path / "cut.bin")])
    clean.set_faults([FaultRule(method="GET", path=r"/files/download", cut_after_bytes=100_000, count=1)])
    target = tmp_path / "copy.bin"
    with target.open("wb") as out:
        client.download_file(aid, cid, "cut.bin", out)
    assert target.read_bytes() == data


def test_upload_is_streamed_not_buffered(clean: EmulatorServer, aid: str, tmp_path: Path) -> None:
    """Uploading a 48 MiB file allocates far less than its size in Python (tracemalloc peak)."""
    size = 48 * 1024 * 1024
    path = tmp_path / "big.bin"
    with path.open("wb") as out:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            out.write(block)
    with AgentClient(clean.base_url, KEY, rate_limit=None) as client:
        cid = client.create_conversation(aid, "big").id
        tracemalloc.start()
        try:
            client.upload_files(aid, cid, [("big.bin", path)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # The emulator runs in this process too, so its allocations count here as well; both sides stream.
    print(f"tracemalloc peak while uploading {size >> 20} MiB: {peak / 2**20:.1f} MiB")
    assert peak < size / 4, f"peak {peak / 2**20:.1f} MiB"


# --- data frames --------------------------------------------------------------------------------------------


@pytest.fixture
def frame(client: AgentClient, aid: str, cid: str, tmp_path: Path) -> str:
    """A data frame 'sales' made by the agent from an uploaded CSV; returns its name."""
    rows = "\n".join(f"{i},item{i % 3},{i * 10}" for i in range(10))
    (tmp_path / "sales.csv").write_text("n,product,total\n" + rows + "\n")
    client.upload_files(aid, cid, [("sales.csv", tmp_path / "sales.csv")])
    client.post_message(aid, cid, "/frame sales.csv sales")
    return "sales"


def test_list_data_frames_with_samples(client: AgentClient, aid: str, cid: str, frame: str) -> None:
    """The frame is listed with its shape and up to num_samples sample rows."""
    (info,) = [f for f in client.list_data_frames(aid, cid, num_samples=2) if f.name == frame]
    assert (info.num_rows, info.column_headers) == (10, ("n", "product", "total"))
    assert len(info.sample_rows) == 2
    assert client.list_data_frames(aid, cid)[0].sample_rows == ()


def test_frame_rows_sorted_sliced_and_selected(client: AgentClient, aid: str, cid: str, frame: str) -> None:
    """order_by '-n', column_names and offset/limit shape the records the server returns."""
    rows = client.get_data_frame_rows(aid, cid, frame, offset=1, limit=3, column_names=["n", "total"], order_by="-n")
    assert rows == [{"n": 8, "total": 80}, {"n": 7, "total": 70}, {"n": 6, "total": 60}]


def test_frame_parquet_download(client: AgentClient, aid: str, cid: str, frame: str, tmp_path: Path) -> None:
    """The whole frame streams as a Parquet file that pyarrow reads back."""
    target = tmp_path / "sales.parquet"
    with target.open("wb") as out:
        assert client.download_data_frame_parquet(aid, cid, frame, out) > 0
    table = pq.read_table(target)
    assert table.num_rows == 10 and table.column_names == ["n", "product", "total"]


def test_unknown_frame_is_not_found(client: AgentClient, aid: str, cid: str) -> None:
    """Rows of a frame that doesn't exist raise NotFound."""
    with pytest.raises(NotFound):
        client.get_data_frame_rows(aid, cid, "no_such_frame")


def test_limit_out_of_bounds_is_bad_request(client: AgentClient, aid: str, cid: str, frame: str) -> None:
    """limit outside -1..100000 is a 422: BadRequest unprocessable_entity."""
    with pytest.raises(BadRequest) as info:
        client.get_data_frame_rows(aid, cid, frame, limit=100_001)
    assert (info.value.status, info.value.code) == (422, "unprocessable_entity")


def test_parquet_off_is_bad_request_unprocessable(tmp_path: Path) -> None:
    """A server with parquet output off answers 422, which the client raises as BadRequest."""
    options = EmulatorOptions(api_key=KEY, parquet_output=False)
    with EmulatorServer(options) as emu, AgentClient(emu.base_url, KEY, rate_limit=None) as client:
        aid = emu.agent_id("Demo Agent")
        cid = client.create_conversation(aid, "frames").id
        (tmp_path / "x.csv").write_text("a,b\n1,2\n")
        client.upload_files(aid, cid, [("x.csv", tmp_path / "x.csv")])
        client.post_message(aid, cid, "/frame x.csv x")
        with pytest.raises(BadRequest) as info:
            client.download_data_frame_parquet(aid, cid, "x", io.BytesIO())
        assert (info.value.status, info.value.code) == (422, "unprocessable_entity")


# --- pagination ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["token", "url", "path"])
def test_pagination_collects_every_page(form: str) -> None:
    """With page_size 2, lists follow next (token, URL or path): 5 conversations in 3 pages, 4 messages."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, page_size=2, next_form=form)) as emu:  # type: ignore[arg-type]
        aid = emu.agent_id("Demo Agent")
        with AgentClient(emu.base_url, KEY, rate_limit=None) as client:
            made = [client.create_conversation(aid, f"c{i}").id for i in range(5)]
            listed = [c.id for c in client.list_conversations(aid)]
            client.post_message(aid, made[0], "one")
            history = client.post_message(aid, made[0], "two")
            messages = client.get_messages(aid, made[0])
            assert [m.message_id for m in messages] == [m.message_id for m in history]
            assert [m.role for m in messages] == ["user", "agent", "user", "agent"]
        assert listed == list(reversed(made))
        wait_until(lambda: len(requests_to(emu, "GET", "/conversations")) == 3, what="3 page requests logged")


# --- faults and retries -------------------------------------------------------------------------------------


def test_get_retries_through_503s(client: AgentClient, clean: EmulatorServer, aid: str, cid: str) -> None:
    """Two 503s on GET messages are retried; the third attempt succeeds."""
    clean.set_faults([FaultRule(method="GET", path=r"/messages$", status=503, count=2)])
    assert client.get_messages(aid, cid) == []
    wait_until(lambda: len(requests_to(clean, "GET", "/messages", cid)) == 3, what="3 attempts logged")


def test_get_retries_through_a_connection_reset(client: AgentClient, clean: EmulatorServer, aid: str) -> None:
    """A reset connection on GET is retried."""
    clean.set_faults([FaultRule(method="GET", path=r"/agents$", reset=True, count=1)])
    assert client.list_agents()


def test_post_is_not_retried_after_a_reset(client: AgentClient, clean: EmulatorServer, aid: str, cid: str) -> None:
    """A reset after the server handled a POST raises TransientError and the message exists exactly once."""
    clean.set_faults([FaultRule(method="POST", path=r"/messages$", reset=True, after=True, count=1)])
    with pytest.raises(TransientError):
        client.post_message(aid, cid, "only once")
    assert [m.text for m in client.get_messages(aid, cid) if m.role == "user"] == ["only once"]


def test_post_is_not_retried_after_a_5xx(client: AgentClient, clean: EmulatorServer, aid: str) -> None:
    """A 500 on a POST raises TransientError after one attempt (a second one would have succeeded)."""
    clean.set_faults([FaultRule(method="POST", path=r"/conversations$", status=500, count=1)])
    with pytest.raises(TransientError) as info:
        client.create_conversation(aid, "x")
    assert info.value.status == 500


def test_gateway_429_is_retried_after_its_wait(client: AgentClient, clean: EmulatorServer, aid: str) -> None:
    """A 429 with Retry-After is retried (even for POST) and the call succeeds."""
    clean.set_faults(
        [FaultRule(method="POST", path=r"/conversations$", status=429, body="gateway", retry_after=0.2, count=1)]
    )
    assert client.create_conversation(aid, "after 429").name == "after 429"


def test_429_without_retries_is_rate_limited(clean: EmulatorServer) -> None:
    """With max_retries=0 a 429 raises RateLimited carrying Retry-After."""
    clean.set_faults([FaultRule(method="GET", path=r"/agents$", status=429, body="gateway", retry_after=3, count=1)])
    with (
        AgentClient(clean.base_url, KEY, rate_limit=None, max_retries=0) as client,
        pytest.raises(RateLimited) as info,
    ):
        client.list_agents()
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize(
    ("body", "status", "error", "text"),
    [
        ("plain", 502, TransientError, "Proxy error"),
        ("detail", 422, BadRequest, ""),
        ("html", 504, TransientError, ""),
        ("empty", 503, TransientError, ""),
        ("envelope", 409, BadRequest, ""),
        ("gateway", 401, AuthError, ""),
    ],
)
def test_every_error_body_style_maps_to_its_class(
    clean: EmulatorServer, aid: str, body: str, status: int, error: type[Exception], text: str
) -> None:
    """Plain-text, FastAPI detail, HTML, empty and envelope bodies all become the right error class."""
    clean.set_faults([FaultRule(method="GET", path=r"/agents/", status=status, body=body)])  # type: ignore[arg-type]
    client = AgentClient(clean.base_url, KEY, rate_limit=None, max_retries=1, backoff=FAST)
    with client, pytest.raises(error) as info:
        client.get_agent(aid)
    assert text in str(info.value)


def test_malformed_json_is_a_protocol_error(clean: EmulatorServer, client: AgentClient) -> None:
    """A 200 whose body is not JSON raises ProtocolError (a fault answers 200 with plain text)."""
    clean.set_faults([FaultRule(method="GET", path=r"/agents$", status=200, body="plain")])
    with pytest.raises(ProtocolError):
        client.list_agents()


def test_connection_refused_is_transient() -> None:
    """A server that isn't there raises TransientError with status 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        AgentClient(f"http://127.0.0.1:{port}/api/v2", KEY, rate_limit=None, max_retries=1, backoff=FAST) as client,
        pytest.raises(TransientError) as info,
    ):
        client.list_agents()
    assert info.value.status == 0


def test_read_timeout_is_transient(clean: EmulatorServer, aid: str) -> None:
    """A server slower than the read timeout raises TransientError after the retries."""
    clean.set_faults([FaultRule(method="GET", path=r"/agents/", latency=1.0)])
    with (
        AgentClient(clean.base_url, KEY, rate_limit=None, timeout=0.2, max_retries=1, backoff=FAST) as client,
        pytest.raises(TransientError, match="timeout"),
    ):
        client.get_agent(aid)


# --- rate limit and threads ---------------------------------------------------------------------------------


def test_client_limiter_keeps_a_rate_limited_server_happy() -> None:
    """With the client at 4 requests / 0.5 s and the server's limit 6 / 0.5 s, 16 requests never see 429."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, rate_limit=6, rate_window=0.5)) as emu:
        with AgentClient(emu.base_url, KEY, rate_limit=RateLimit(4, 0.5), max_retries=0) as client:
            for _ in range(16):
                client.list_agents()
        assert all(r.status != 429 for r in emu.requests)


def test_server_rate_limit_without_client_limiter_raises_rate_limited() -> None:
    """The emulator's own limit answers 429 with a wait that the client reports."""
    options = EmulatorOptions(api_key=KEY, rate_limit=2, rate_window=30.0)
    with (
        EmulatorServer(options) as emu,
        AgentClient(emu.base_url, KEY, rate_limit=None, max_retries=0) as client,
    ):
        client.list_agents()
        client.list_agents()
        with pytest.raises(RateLimited) as info:
            client.list_agents()
    assert info.value.retry_after is not None and info.value.retry_after > 0


def test_one_client_shared_by_threads(client: AgentClient, aid: str) -> None:
    """Eight threads sharing one client each create and list conversations without errors."""
    made: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            conv = client.create_conversation(aid, f"thread {i}")
            ids = {c.id for c in client.list_conversations(aid)}
            assert conv.id in ids
            with lock:
                made.append(conv.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(made)) == 8
