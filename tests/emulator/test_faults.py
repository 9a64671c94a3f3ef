"""Fault injection: error answers in every body style, counts, odds, latency, resets, cuts and slow bodies."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from tests.waiting import wait_until


def test_status_fault_answers_the_envelope(api: httpx.Client, emu: EmulatorServer) -> None:
    """A status rule answers that status with the server's envelope instead of handling the request."""
    emu.set_faults([FaultRule(path=r"/agents$", status=503)])
    response = api.get("/agents")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "internal_error"
    assert response.json()["error"]["message"] == "Service Unavailable"


def test_count_limits_a_rule_to_its_first_hits(api: httpx.Client, emu: EmulatorServer) -> None:
    """``count=2`` fails the first two matching requests only."""
    emu.set_faults([FaultRule(method="GET", path=r"/agents$", status=500, count=2)])
    assert [api.get("/agents").status_code for _ in range(3)] == [500, 500, 200]
    assert emu.faults[0].hits == 2 and emu.faults[0].exhausted


def test_plain_text_proxy_error(api: httpx.Client, emu: EmulatorServer) -> None:
    """``body="plain"`` with 502 answers the gateway's plain text ``Proxy error``."""
    emu.set_faults([FaultRule(status=502, body="plain")])
    response = api.get("/agents")
    assert response.status_code == 502
    assert response.text == "Proxy error"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_detail_body(api: httpx.Client, emu: EmulatorServer) -> None:
    """``body="detail"`` answers FastAPI's default ``{"detail": …}``."""
    emu.set_faults([FaultRule(status=500, body="detail", message="boom")])
    assert api.get("/agents").json() == {"detail": "boom"}


def test_gateway_body_has_no_error_id(api: httpx.Client, emu: EmulatorServer) -> None:
    """``body="gateway"`` answers the envelope without ``error_id``."""
    emu.set_faults([FaultRule(status=500, body="gateway")])
    assert api.get("/agents").json() == {"error": {"code": "unexpected", "message": "Internal Server Error"}}


def test_html_body(api: httpx.Client, emu: EmulatorServer) -> None:
    """``body="html"`` answers an nginx-like HTML error page."""
    emu.set_faults([FaultRule(status=504, body="html")])
    response = api.get("/agents")
    assert response.status_code == 504 and "<h1>504 Gateway Timeout</h1>" in response.text


def test_retry_after_header(api: httpx.Client, emu: EmulatorServer) -> None:
    """``retry_after`` adds the header to the fault's answer."""
    emu.set_faults([FaultRule(status=429, body="gateway", code="rate_limit_exceeded", retry_after=7)])
    response = api.get("/agents")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"


def test_route_name_and_method_select_requests(api: httpx.Client, emu: EmulatorServer, aid: str) -> None:
    """A rule for route ``create_conversation`` leaves the listing of the same path alone."""
    emu.set_faults([FaultRule(route="create_conversation", status=503)])
    assert api.get(f"/agents/{aid}/conversations").status_code == 200
    assert api.post(f"/agents/{aid}/conversations", json={"name": "x"}).status_code == 503


def test_probability_is_reproducible(api: httpx.Client, emu: EmulatorServer) -> None:
    """A 50 % rule fails some requests and passes others."""
    emu.set_faults([FaultRule(path=r"/agents$", status=503, probability=0.5)])
    statuses = [api.get("/agents").status_code for _ in range(30)]
    assert 0 < statuses.count(503) < 30 and set(statuses) == {200, 503}


def test_latency_delays_the_answer(api: httpx.Client, emu: EmulatorServer) -> None:
    """``latency`` holds the request before it is handled."""
    emu.set_faults([FaultRule(path=r"/agents$", latency=0.3)])
    started = time.monotonic()
    assert api.get("/agents").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_after_applies_the_change_then_fails(api: httpx.Client, emu: EmulatorServer, aid: str) -> None:
    """With ``after`` the request is handled (the conversation exists) but the answer is the error."""
    emu.set_faults([FaultRule(route="create_conversation", status=502, body="plain", after=True)])
    response = api.post(f"/agents/{aid}/conversations", json={"name": "applied anyway"})
    assert response.status_code == 502
    assert any(c["name"] == "applied anyway" for c in emu.conversations(aid))


def test_reset_is_a_real_tcp_reset(emu: EmulatorServer) -> None:
    """``reset`` ends the connection with a RST: the client's read fails with ECONNRESET."""
    emu.set_faults([FaultRule(path=r"/agents$", reset=True)])
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        request = f"GET /tenants/demo/api/v2/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {emu.api_key}\r\n\r\n"
        sock.sendall(request.encode())
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass


def test_reset_surfaces_in_httpx_as_a_transport_error(api: httpx.Client, emu: EmulatorServer) -> None:
    """Through httpx a reset is a transport error, and the log records no status."""
    emu.set_faults([FaultRule(path=r"/agents$", reset=True, count=1)])
    with pytest.raises(httpx.TransportError):
        api.get("/agents")
    assert api.get("/agents").status_code == 200
    record = next(r for r in emu.requests if r.fault == "reset")
    assert record.status == 0


def test_reset_after_handling_keeps_the_message(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """A sync post reset after handling has stored both messages although the client saw no answer."""
    emu.set_faults([FaultRule(route="post_message", reset=True, after=True)])
    with pytest.raises(httpx.TransportError):
        api.post(f"{conv}/messages", json={"content": "did it land?"})
    assert [m["role"] for m in emu.messages(cid)] == ["user", "agent"]


def read_until_cut(api: httpx.Client, conv: str, prompt: str) -> list[str]:
    """The ``event:`` lines received before the connection broke (it must break)."""
    events: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        api.stream("POST", f"{conv}/stream", json={"content": prompt}) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("event:"):
                events.append(line)
    return events


def test_stream_cut_after_n_events(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """``stream_cut_after=4`` delivers four events, then the stream breaks without agent_finished."""
    emu.set_faults([FaultRule(route="stream_message", stream_cut_after=4)])
    assert len(read_until_cut(api, conv, "/slow 10 30")) == 4
    wait_until(lambda: emu.active_runs == 0, what="the run to be cancelled")
    assert [m["role"] for m in emu.messages(cid)] == ["user"]


def test_stream_cut_with_finish_run_commits_the_reply(
    api: httpx.Client, emu: EmulatorServer, conv: str, cid: str
) -> None:
    """With ``finish_run`` the cut stream's run completes and its message is committed."""
    emu.set_faults([FaultRule(route="stream_message", stream_cut_after=3, finish_run=True)])
    read_until_cut(api, conv, "/slow 5 20")
    wait_until(lambda: [m["role"] for m in emu.messages(cid)] == ["user", "agent"], what="the reply to commit")


def test_cut_after_bytes_truncates_a_download(api: httpx.Client, emu: EmulatorServer, conv: str) -> None:
    """``cut_after_bytes`` sends exactly that many body bytes, then closes the connection."""
    api.post(f"{conv}/files", files=[("files", ("big.bin", b"z" * 300_000))])
    emu.set_faults([FaultRule(route="download_file", cut_after_bytes=100_000)])
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        api.stream("GET", f"{conv}/files/download/", params={"file_ref": "big.bin"}) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert len(received) == 100_000


def test_bytes_per_second_throttles_the_body(api: httpx.Client, emu: EmulatorServer, conv: str) -> None:
    """``bytes_per_second`` slows a download to about that rate."""
    api.post(f"{conv}/files", files=[("files", ("slow.bin", b"s" * 20_000))])
    emu.set_faults([FaultRule(route="download_file", bytes_per_second=50_000)])
    started = time.monotonic()
    content = api.get(f"{conv}/files/download/", params={"file_ref": "slow.bin"}).content
    assert content == b"s" * 20_000
    assert time.monotonic() - started >= 0.35


def test_faults_are_logged_with_the_request(api: httpx.Client, emu: EmulatorServer) -> None:
    """The request log says which fault hit a request."""
    emu.set_faults([FaultRule(path=r"/agents$", status=503, count=1)])
    api.get("/agents")
    [record] = [r for r in emu.requests if r.path.endswith("/agents")]
    assert (record.method, record.status, record.route, record.fault) == (
        "GET",
        503,
        "list_agents",
        "status 503",
    )
    assert record.finished >= record.started


def test_clear_faults(api: httpx.Client, emu: EmulatorServer) -> None:
    """``clear_faults`` removes every rule."""
    emu.set_faults([FaultRule(status=500)])
    emu.clear_faults()
    assert api.get("/agents").status_code == 200


def test_faults_given_at_start_up() -> None:
    """Rules in the options are active from the first request."""
    options = EmulatorOptions(faults=(FaultRule(path=r"/agents$", status=418, count=1),))
    with EmulatorServer(options) as emulator:
        response = httpx.get(f"{emulator.base_url}/agents", headers={"Authorization": f"Bearer {emulator.api_key}"})
    assert response.status_code == 418


def test_invalid_rules_are_refused() -> None:
    """A rule with an impossible value fails at construction."""
    with pytest.raises(ValueError, match="probability"):
        FaultRule(probability=2.0)
    with pytest.raises(ValueError, match="after"):
        FaultRule(after=True)
