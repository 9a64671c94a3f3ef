"""AgentClient against httpx.MockTransport: the edge cases a real server can't easily be made to produce."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convsync.api.client import CHUNK_SIZE, AgentClient, RateLimit
from convsync.api.models import MessageFinished, StreamFinished
from convsync.api.retry import Backoff
from convsync.errors import (
    AuthError,
    BadRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    StreamInterrupted,
    TransientError,
)

KEY = "s4w_super-secret-key-0123456789"
BASE = "https://agents.example.com/tenants/demo/api/v2"
AID = "c1bb0000-0000-4000-8000-000000000001"
CID = "25ca0000-0000-4000-8000-000000000002"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that serves queued answers and remembers every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


def client_for(handler: Handler, base: str = BASE, **options: Any) -> tuple[AgentClient, list[float]]:
    """A client on a MockTransport whose sleeps are recorded instead of slept."""
    slept: list[float] = []
    options.setdefault("rate_limit", None)
    options.setdefault("backoff", Backoff(rand=lambda: 0.5))
    client = AgentClient(base, KEY, transport=httpx.MockTransport(handler), sleep=slept.append, **options)
    return client, slept


def page(data: list[Any], next_: str | None = None, has_more: bool | None = None) -> httpx.Response:
    more = next_ is not None if has_more is None else has_more
    return httpx.Response(200, json={"next": next_, "has_more": more, "data": data})


def envelope(status: int, code: str, message: str, error_id: str | None = "e-1", **kw: Any) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if error_id:
        error["error_id"] = error_id
    return httpx.Response(status, json={"error": error}, **kw)


AGENT = {"id": AID, "name": "Weather Assistant", "description": "d", "mode": "conversational", "x": 1}


# --- URLs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [BASE, BASE + "/", BASE + "//"])
def test_base_url_with_or_without_trailing_slash_gives_the_same_urls(base: str) -> None:
    """A trailing slash on the base URL never produces a double slash."""
    rec = Recorder(page([AGENT]))
    client, _ = client_for(rec, base)
    client.list_agents()
    assert rec.urls == [BASE + "/agents"]


def test_download_uses_the_slashed_route_and_file_ref_param() -> None:
    """The download route keeps its trailing slash and passes file_ref as an encoded query parameter."""
    rec = Recorder(httpx.Response(200, content=b"abc"))
    client, _ = client_for(rec)
    out = io.BytesIO()
    assert client.download_file(AID, CID, "a b&c.csv", out) == 3
    assert rec.urls == [f"{BASE}/agents/{AID}/conversations/{CID}/files/download/?file_ref=a+b%26c.csv"]
    assert out.getvalue() == b"abc"


def test_path_segments_are_encoded_whole() -> None:
    """A data frame name with '/' or spaces stays one path segment."""
    rec = Recorder(httpx.Response(200, json=[]))
    client, _ = client_for(rec)
    client.get_data_frame_rows(AID, CID, "a/b c")
    assert rec.requests[0].url.raw_path.startswith(
        f"/tenants/demo/api/v2/agents/{AID}/conversations/{CID}/data-frames/a%2Fb%20c?".encode()
    )


@pytest.mark.parametrize("name", [".", "..", ""])
def test_a_dot_name_is_refused_before_any_request(name: str) -> None:
    """A frame named '..' would address another route once the server normalises the path: nothing is sent."""
    rec = Recorder(httpx.Response(200, json=[]))
    client, _ = client_for(rec)
    with pytest.raises(BadRequest):
        client.get_data_frame_rows(AID, CID, name)
    assert rec.requests == []


def test_bearer_key_is_sent() -> None:
    """Every request carries Authorization: Bearer <key>."""
    rec = Recorder(page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_snowflake_token_is_sent() -> None:
    """auth="snowflake" sends Authorization: Snowflake Token="<key>"."""
    rec = Recorder(page([]))
    client, _ = client_for(rec, auth="snowflake")
    client.list_agents()
    assert rec.requests[0].headers["authorization"] == f'Snowflake Token="{KEY}"'


def test_no_auth_sends_no_authorization_header() -> None:
    """auth="none" sends no Authorization header at all."""
    rec = Recorder(page([]))
    client, _ = client_for(rec, auth="none")
    client.list_agents()
    assert "authorization" not in rec.requests[0].headers


def test_invalid_base_url_is_refused() -> None:
    """A base URL without http(s) scheme and host is a ValueError up front."""
    with pytest.raises(ValueError):
        AgentClient("agents.example.com/api/v2", KEY)


# --- pagination ---------------------------------------------------------------------------------------------


def test_token_pagination_passes_next_encoded_with_the_same_params() -> None:
    """An opaque next token goes back as ?next= (URL-encoded) next to the original parameters."""
    rec = Recorder(page([AGENT], "tok/1 +"), page([{**AGENT, "id": "2"}]))
    client, _ = client_for(rec)
    agents = client.list_agents(name="weather")
    assert [a.id for a in agents] == [AID, "2"]
    assert rec.urls[1] == f"{BASE}/agents?name=weather&next=tok%2F1+%2B"


def test_url_pagination_follows_an_absolute_url_on_the_same_server() -> None:
    """A next that is a full URL on the base's origin is fetched as is."""
    rec = Recorder(page([AGENT], f"{BASE}/agents?cursor=2"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1] == f"{BASE}/agents?cursor=2"


def test_url_pagination_resolves_server_paths_and_base_relative_paths() -> None:
    """A next path under the base path is taken from the origin; another path is relative to the base."""
    rec = Recorder(page([AGENT], "/tenants/demo/api/v2/agents?cursor=2"), page([AGENT], "/agents?cursor=3"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1:] == [f"{BASE}/agents?cursor=2", f"{BASE}/agents?cursor=3"]


def test_next_url_on_another_origin_is_followed_on_ours() -> None:
    """A next URL naming another host (the server behind the gateway) is followed on the base's origin."""
    rec = Recorder(page([AGENT], "http://agent-server.internal:8000/api/public/v1/agents?next=2"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1] == f"{BASE}/agents?next=2"


def test_next_url_on_another_scheme_is_followed_on_ours() -> None:
    """A next URL with the same path on another scheme is followed with the base's scheme and port."""
    rec = Recorder(page([AGENT], BASE.replace("https://", "http://") + "/agents?next=2"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1] == f"{BASE}/agents?next=2"


def test_next_server_root_path_maps_onto_the_list() -> None:
    """A next path under the server's own prefix (/api/public/v1/…) is the same list on the base."""
    rec = Recorder(page([AGENT], "/api/public/v1/agents/?next=2"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1] == f"{BASE}/agents?next=2"


def test_next_relative_reference_is_resolved_against_the_list() -> None:
    """A next of the form ?next=… is the same list with that query."""
    rec = Recorder(page([AGENT], "?next=2"), page([]))
    client, _ = client_for(rec)
    client.list_agents()
    assert rec.urls[1] == f"{BASE}/agents?next=2"


@pytest.mark.parametrize("next_", ["/agents?next=a\nb", "/agents/\u00e9t\u00e9?next=2", "http://host:x/agents"])
def test_a_next_that_is_no_usable_address_is_a_protocol_error(next_: str) -> None:
    """A next with a control character, raw non-ASCII in its path or a broken port is a ProtocolError (the
    error tree's answer to an unusable page), not an exception that reads as a bug; nothing more is fetched."""
    rec = Recorder(page([AGENT], next_), page([]))
    client, _ = client_for(rec)
    with pytest.raises(ProtocolError):
        client.list_agents()
    assert len(rec.urls) == 1


def test_has_more_false_stops_even_with_a_next() -> None:
    """has_more: false ends the listing whatever next says."""
    rec = Recorder(page([AGENT], "tok", has_more=False))
    client, _ = client_for(rec)
    assert len(client.list_agents()) == 1
    assert len(rec.requests) == 1


def test_repeated_token_is_a_protocol_error_not_a_loop() -> None:
    """A server that hands out the same token twice raises ProtocolError instead of looping forever."""
    rec = Recorder(page([AGENT], "same"))
    client, _ = client_for(rec)
    with pytest.raises(ProtocolError):
        client.list_agents()
    assert len(rec.requests) == 2


def test_bare_list_answers_are_accepted_on_list_routes() -> None:
    """Files and data frames come as bare arrays; a paginated object there is followed too."""
    rec = Recorder(page([{"file_ref": "a.csv"}], "t"), page([{"file_ref": "b.csv"}]))
    client, _ = client_for(rec)
    assert [f.file_ref for f in client.list_files(AID, CID)] == ["a.csv", "b.csv"]


def test_agent_name_filter_is_applied_when_the_server_ignores_it() -> None:
    """list_agents(name=…) keeps only case-insensitive prefix matches even if the server sent everything."""
    rec = Recorder(page([AGENT, {**AGENT, "id": "2", "name": "Other"}]))
    client, _ = client_for(rec)
    assert [a.name for a in client.list_agents(name="WEATHER")] == ["Weather Assistant"]


# --- errors -------------------------------------------------------------------------------------------------


def test_envelope_error_maps_to_its_class_with_code_and_error_id() -> None:
    """A 404 envelope becomes NotFound carrying the code, message and error_id."""
    client, _ = client_for(Recorder(envelope(404, "not_found", "Agent x not found")))
    with pytest.raises(NotFound) as info:
        client.get_agent(AID)
    assert (info.value.status, info.value.code, info.value.error_id) == (404, "not_found", "e-1")
    assert "Agent x not found" in str(info.value)


def test_gateway_envelope_without_error_id_is_an_auth_error() -> None:
    """The gateway's 401 (no error_id) becomes AuthError."""
    client, _ = client_for(Recorder(envelope(401, "unauthorized", "Invalid API key", error_id=None)))
    with pytest.raises(AuthError) as info:
        client.list_agents()
    assert info.value.error_id is None and info.value.code == "unauthorized"


def test_forbidden_is_an_auth_error() -> None:
    """403 is AuthError too: the key lacks access."""
    client, _ = client_for(Recorder(envelope(403, "forbidden", "no")))
    with pytest.raises(AuthError):
        client.get_agent(AID)


def test_fastapi_detail_list_becomes_a_readable_bad_request() -> None:
    """FastAPI's {"detail": [...]} becomes BadRequest with 'loc -> loc: msg' text."""
    detail = {"detail": [{"loc": ["body", "content"], "msg": "Field required", "type": "missing"}]}
    client, _ = client_for(Recorder(httpx.Response(422, json=detail)))
    with pytest.raises(BadRequest) as info:
        client.create_conversation(AID, "x")
    assert "body -> content: Field required" in str(info.value)


def test_plain_text_proxy_error_is_transient_with_its_text() -> None:
    """The gateway's plain-text '502 Proxy error' becomes TransientError (after the retries)."""
    client, slept = client_for(Recorder(httpx.Response(502, text="Proxy error")), max_retries=2)
    with pytest.raises(TransientError) as info:
        client.list_agents()
    assert info.value.status == 502 and "Proxy error" in str(info.value)
    assert len(slept) == 2


def test_html_error_page_is_reduced_to_its_title() -> None:
    """An HTML error page from a proxy contributes its title, not its markup."""
    html = "<html><head><title>504 Gateway Time-out</title></head><body><h1>504</h1></body></html>"
    client, _ = client_for(Recorder(httpx.Response(504, text=html)), max_retries=0)
    with pytest.raises(TransientError, match="504 Gateway Time-out"):
        client.list_agents()


def test_empty_error_body_uses_the_reason_phrase() -> None:
    """An error without a body still says its status."""
    client, _ = client_for(Recorder(httpx.Response(409)))
    with pytest.raises(BadRequest, match="409 Conflict"):
        client.create_conversation(AID, "x")


def test_malformed_json_on_200_is_a_protocol_error() -> None:
    """A 200 whose body is not JSON raises ProtocolError."""
    client, _ = client_for(Recorder(httpx.Response(200, text="<html>login</html>")))
    with pytest.raises(ProtocolError):
        client.list_agents()


def test_wrong_shape_on_200_is_a_protocol_error() -> None:
    """A page whose data is not a list raises ProtocolError."""
    client, _ = client_for(Recorder(httpx.Response(200, json={"next": None, "has_more": False, "data": "x"})))
    with pytest.raises(ProtocolError):
        client.list_conversations(AID)


def test_page_without_data_is_empty() -> None:
    """A page without a data key is an empty page (a missing collection is an empty one)."""
    client, _ = client_for(Recorder(httpx.Response(200, json={"next": None, "has_more": False})))
    assert client.list_conversations(AID) == []


def test_429_becomes_rate_limited_with_retry_after() -> None:
    """A 429 without retries left raises RateLimited with the server's Retry-After."""
    answer = envelope(429, "rate_limit_exceeded", "Too many requests", error_id=None, headers={"Retry-After": "7"})
    client, _ = client_for(Recorder(answer), max_retries=0)
    with pytest.raises(RateLimited) as info:
        client.list_agents()
    assert info.value.retry_after == 7.0


def test_429_with_ratelimit_draft_header_gives_retry_after() -> None:
    """express-rate-limit's draft-8 RateLimit header yields the wait when Retry-After is absent."""
    answer = envelope(429, "rate_limit_exceeded", "Too many", error_id=None, headers={"RateLimit": '"p";r=0;t=4'})
    client, _ = client_for(Recorder(answer), max_retries=0)
    with pytest.raises(RateLimited) as info:
        client.list_agents()
    assert info.value.retry_after == 4.0


def test_key_never_appears_in_errors_or_repr() -> None:
    """Even when the server echoes the key, exception text and the client's repr don't show it."""
    client, _ = client_for(Recorder(envelope(401, "unauthorized", f"Invalid API key {KEY}")))
    with pytest.raises(AuthError) as info:
        client.list_agents()
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in repr(client) and KEY not in repr(vars(client))


def test_transport_error_text_has_no_key() -> None:
    """A connection failure's message names the route, never the key."""
    client, _ = client_for(Recorder(httpx.ConnectError("[Errno 111] Connection refused")), max_retries=0)
    with pytest.raises(TransientError) as info:
        client.list_agents()
    assert info.value.status == 0 and "/agents" in str(info.value) and KEY not in str(info.value)


# --- retries ------------------------------------------------------------------------------------------------


def test_get_is_retried_on_5xx_then_succeeds() -> None:
    """Two 503s then a 200: GET succeeds after two backoff sleeps."""
    rec = Recorder(envelope(503, "unexpected", "busy"), envelope(503, "unexpected", "busy"), page([AGENT]))
    client, slept = client_for(rec)
    assert len(client.list_agents()) == 1
    assert len(rec.requests) == 3 and len(slept) == 2


def test_backoff_grows_between_retries() -> None:
    """Successive waits follow the exponential ceiling (jitter fixed at one half here)."""
    client, slept = client_for(Recorder(httpx.Response(503)), max_retries=3)
    with pytest.raises(TransientError):
        client.list_agents()
    assert slept == [0.25, 0.5, 1.0]


def test_get_is_retried_on_read_timeout() -> None:
    """A read timeout on GET is retried."""
    rec = Recorder(httpx.ReadTimeout("timed out"), page([AGENT]))
    client, _ = client_for(rec)
    assert len(client.list_agents()) == 1


def test_post_is_not_retried_on_5xx() -> None:
    """A POST that got a 503 may have been applied: one attempt, then TransientError."""
    rec = Recorder(envelope(503, "unexpected", "busy"))
    client, slept = client_for(rec)
    with pytest.raises(TransientError):
        client.post_message(AID, CID, "hi")
    assert len(rec.requests) == 1 and slept == []


def test_post_is_not_retried_after_a_read_timeout() -> None:
    """A POST whose answer timed out may have been applied: not repeated."""
    rec = Recorder(httpx.ReadTimeout("timed out"))
    client, _ = client_for(rec)
    with pytest.raises(TransientError):
        client.create_conversation(AID, "x")
    assert len(rec.requests) == 1


def test_post_is_retried_when_the_connection_never_opened() -> None:
    """ConnectError means nothing was sent, so even a POST is tried again."""
    rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"id": CID, "name": "x", "agent_id": AID}))
    client, _ = client_for(rec)
    assert client.create_conversation(AID, "x").id == CID
    assert len(rec.requests) == 2


def test_post_is_retried_after_429_honouring_retry_after() -> None:
    """The gateway refuses a 429 before forwarding, so a POST is repeated after the server's wait."""
    rec = Recorder(
        envelope(429, "rate_limit_exceeded", "slow down", error_id=None, headers={"Retry-After": "3"}),
        httpx.Response(200, json={"id": CID, "name": "x", "agent_id": AID}),
    )
    client, slept = client_for(rec)
    client.create_conversation(AID, "x")
    assert slept == [3.0]


def test_very_long_retry_after_is_not_slept_through() -> None:
    """A Retry-After beyond the backoff's max_wait raises RateLimited at once."""
    rec = Recorder(envelope(429, "too_many_requests", "later", headers={"Retry-After": "3600"}))
    client, slept = client_for(rec)
    with pytest.raises(RateLimited):
        client.list_agents()
    assert slept == [] and len(rec.requests) == 1


def test_retry_after_on_503_is_honoured() -> None:
    """A 503 with Retry-After waits at least that long before the GET is repeated."""
    rec = Recorder(httpx.Response(503, headers={"Retry-After": "2"}), page([]))
    client, slept = client_for(rec)
    client.list_agents()
    assert slept == [2.0]


def test_client_errors_are_not_retried() -> None:
    """A 400/404 is final: one attempt."""
    rec = Recorder(envelope(400, "bad_request", "Invalid UUID: x"))
    client, _ = client_for(rec)
    with pytest.raises(BadRequest):
        client.get_agent("x")
    assert len(rec.requests) == 1


def test_delete_whose_first_attempt_was_lost_and_retry_finds_404_succeeds() -> None:
    """A DELETE retried after a broken answer that then gets 404 reports the conversation deleted."""
    rec = Recorder(httpx.ReadError("reset"), envelope(404, "not_found", "gone"))
    client, _ = client_for(rec)
    gone = client.delete_conversation(AID, CID)
    assert (gone.id, gone.agent_id, gone.name) == (CID, AID, "")


def test_delete_of_a_missing_conversation_is_not_found() -> None:
    """A 404 on the first DELETE attempt is NotFound."""
    client, _ = client_for(Recorder(envelope(404, "not_found", "gone")))
    with pytest.raises(NotFound):
        client.delete_conversation(AID, CID)


def test_rate_limiter_makes_the_client_wait_instead_of_failing() -> None:
    """With 2 requests / 10 s, the third request sleeps for the window to slide."""
    now = [0.0]
    client, slept = client_for(Recorder(page([])), rate_limit=RateLimit(2, 10.0), clock=lambda: now[0])
    for _ in range(3):
        client.list_agents()
    assert slept == [10.0]


def test_timeouts_per_kind_of_call() -> None:
    """Ordinary calls read with `timeout`, the sync post with `run_timeout`, a stream with its idle limit."""
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path.rsplit("/", 1)[-1]] = request.extensions["timeout"]
        if request.url.path.endswith("/stream"):
            return httpx.Response(200, text='event: agent_event\r\ndata: {"event_type": "agent_finished"}\r\n\r\n')
        return page([])

    client, _ = client_for(handler, timeout=30.0, run_timeout=None, stream_idle_timeout=120.0)
    client.get_messages(AID, CID)
    assert seen["messages"] == {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    client.post_message(AID, CID, "hi")
    assert seen["messages"]["read"] is None
    list(client.stream_message(AID, CID, "hi"))
    assert seen["stream"]["read"] == 120.0


# --- streaming ----------------------------------------------------------------------------------------------


class RecordingStream(httpx.SyncByteStream):
    """A response body served chunk by chunk that remembers whether it was closed."""

    def __init__(self, chunks: list[bytes], then: Exception | None = None) -> None:
        self.chunks = chunks
        self.then = then
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


def sse(payload: dict[str, Any], event: str = "agent_event") -> bytes:
    return f"event: {event}\r\ndata: {json.dumps(payload)}\r\n\r\n".encode()


READY = sse({"event_type": "agent_ready", "run_id": "r", "thread_id": CID}, "agent_ready")
END = sse(
    {
        "event_type": "message_end",
        "message_id": "m",
        "data": {"message_id": "m", "role": "agent", "content": [{"kind": "text", "text": "hi"}]},
    }
)
FINISHED = sse({"event_type": "agent_finished", "run_id": "r"})


def test_stream_posts_content_and_yields_typed_events() -> None:
    """stream_message POSTs {"content": …} to /stream and yields events through StreamFinished."""
    body = RecordingStream([READY, b": ping - now\r\n\r\n", END, FINISHED])
    rec = Recorder(lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body))
    client, _ = client_for(rec)
    events = list(client.stream_message(AID, CID, "hello"))
    assert json.loads(rec.requests[0].content) == {"content": "hello"}
    assert isinstance(events[-1], StreamFinished)
    assert any(isinstance(e, MessageFinished) and e.message.text == "hi" for e in events)
    assert body.closed


def test_stream_cut_by_the_network_raises_stream_interrupted() -> None:
    """A connection reset in the middle of the stream raises StreamInterrupted and is not retried."""
    body = RecordingStream([READY], then=httpx.ReadError("connection reset"))
    rec = Recorder(lambda r: httpx.Response(200, stream=body))
    client, _ = client_for(rec)
    with pytest.raises(StreamInterrupted):
        list(client.stream_message(AID, CID, "hello"))
    assert len(rec.requests) == 1 and body.closed


def test_stream_that_ends_early_raises_stream_interrupted() -> None:
    """A body that ends cleanly but without agent_finished raises StreamInterrupted."""
    rec = Recorder(lambda r: httpx.Response(200, stream=RecordingStream([READY, END])))
    client, _ = client_for(rec)
    with pytest.raises(StreamInterrupted):
        list(client.stream_message(AID, CID, "hello"))


def test_closing_the_stream_generator_closes_the_response() -> None:
    """Stopping after the first event closes the HTTP response."""
    body = RecordingStream([READY, END, FINISHED])
    client, _ = client_for(Recorder(lambda r: httpx.Response(200, stream=body)))
    events = client.stream_message(AID, CID, "hello")
    next(events)
    events.close()  # type: ignore[attr-defined]
    assert body.closed


def test_stream_404_is_the_json_envelope() -> None:
    """A missing conversation answers the stream route with a JSON 404: NotFound."""
    client, _ = client_for(Recorder(envelope(404, "not_found", "Thread not found")))
    with pytest.raises(NotFound):
        next(client.stream_message(AID, CID, "hello"))


# --- uploads and downloads ----------------------------------------------------------------------------------


class ChunkCountingTransport(httpx.BaseTransport):
    """A transport that consumes the request body piece by piece as a socket would (MockTransport reads it
    whole first, hiding whether it was streamed)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.body = bytearray()
        self.headers: httpx.Headers | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = request.headers
        for chunk in request.stream:  # type: ignore[union-attr]
            self.sizes.append(len(chunk))
            self.body += chunk
        return httpx.Response(200, json=[{"file_ref": "big.bin", "file_size_raw": 123}])


def test_upload_is_streamed_in_chunks_with_a_content_length(tmp_path: Path) -> None:
    """The multipart body reaches the transport in pieces of at most CHUNK_SIZE, totalling Content-Length."""
    data = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)
    (tmp_path / "big.bin").write_bytes(data)
    transport = ChunkCountingTransport()
    client = AgentClient(BASE, KEY, transport=transport, rate_limit=None)
    progress: list[tuple[int, int]] = []
    client.upload_files(AID, CID, [("big.bin", tmp_path / "big.bin")], lambda d, t: progress.append((d, t)))
    assert max(transport.sizes) <= CHUNK_SIZE and len(transport.sizes) > 4
    assert transport.headers is not None
    assert int(transport.headers["content-length"]) == len(transport.body)
    assert "transfer-encoding" not in transport.headers
    assert data in transport.body
    assert progress[-1] == (len(data), len(data))


def test_upload_sends_repeated_files_fields_with_names_and_types(tmp_path: Path) -> None:
    """Each file is a 'files' part with its filename (quotes backslash-escaped) and a guessed content type."""
    (tmp_path / "a").write_bytes(b"1,2\n")
    (tmp_path / "b").write_bytes(b"{}")
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(200, json=[{"file_ref": "a.csv"}, {"file_ref": 'say "hi".json'}])

    client, _ = client_for(handler)
    client.upload_files(AID, CID, [("a.csv", tmp_path / "a"), ('say "hi".json', tmp_path / "b")])
    body = bodies[0]
    assert b'name="files"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n1,2\n\r\n' in body
    assert b'name="files"; filename="say \\"hi\\".json"\r\nContent-Type: application/json' in body


def test_upload_of_a_file_that_grows_meanwhile_fails(tmp_path: Path) -> None:
    """A file whose size changes while it is sent raises TransientError instead of sending a torn copy."""
    path = tmp_path / "log.txt"
    path.write_bytes(b"x" * (CHUNK_SIZE + 10))

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        return httpx.Response(200, json=[])

    def grow(done: int, total: int) -> None:
        with path.open("ab") as handle:
            handle.write(b"more")

    client, _ = client_for(handler)
    with pytest.raises(TransientError, match="grew"):
        client.upload_files(AID, CID, [("log.txt", path)], grow)


def test_download_restarts_after_a_break_when_the_target_is_seekable() -> None:
    """A download cut mid-body is rewound and fetched again, leaving exactly one copy in the file."""
    first = RecordingStream([b"hello "], then=httpx.ReadError("reset"))
    second = RecordingStream([b"hello ", b"world"])
    rec = Recorder(lambda r: httpx.Response(200, stream=first), lambda r: httpx.Response(200, stream=second))
    client, _ = client_for(rec)
    out = io.BytesIO(b"prefix:")
    out.seek(0, io.SEEK_END)
    assert client.download_file(AID, CID, "f.txt", out) == 11
    assert out.getvalue() == b"prefix:hello world"


def test_download_progress_reports_content_length() -> None:
    """Progress is reported as (done, total) with the server's Content-Length."""
    rec = Recorder(httpx.Response(200, content=b"x" * 10))
    client, _ = client_for(rec)
    progress: list[tuple[int, int]] = []
    client.download_file(AID, CID, "f", io.BytesIO(), lambda d, t: progress.append((d, t)))
    assert progress[-1] == (10, 10)


# --- data frames --------------------------------------------------------------------------------------------


def test_frame_rows_pass_slicing_parameters() -> None:
    """offset, limit, column_names (comma-joined) and order_by go out as query parameters."""
    rec = Recorder(httpx.Response(200, json=[{"a": 1}]))
    client, _ = client_for(rec)
    rows = client.get_data_frame_rows(AID, CID, "sales", offset=5, limit=10, column_names=["a", "b"], order_by="-a")
    assert rows == [{"a": 1}]
    assert dict(rec.requests[0].url.params) == {
        "offset": "5",
        "limit": "10",
        "column_names": "a,b",
        "order_by": "-a",
        "output_format": "json",
    }


def test_frame_rows_in_columns_and_rows_shape_become_records() -> None:
    """The {"columns", "rows"} shape some mocks use is turned into records too."""
    rec = Recorder(httpx.Response(200, json={"columns": ["a", "b"], "rows": [[1, 2]]}))
    client, _ = client_for(rec)
    assert client.get_data_frame_rows(AID, CID, "f") == [{"a": 1, "b": 2}]


def test_parquet_refused_by_the_server_is_bad_request_unprocessable() -> None:
    """A server with parquet output off answers 422: BadRequest with code unprocessable_entity."""
    rec = Recorder(envelope(422, "unprocessable_entity", "Request validation failed: query -> output_format"))
    client, _ = client_for(rec)
    with pytest.raises(BadRequest) as info:
        client.download_data_frame_parquet(AID, CID, "f", io.BytesIO())
    assert (info.value.status, info.value.code) == (422, "unprocessable_entity")
    assert rec.requests[0].url.params["output_format"] == "parquet"
