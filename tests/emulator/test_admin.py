"""The admin API under ``/_emulator``: the same controls as in-process, over HTTP, outside the API."""

from __future__ import annotations

import httpx

from convsync.emulator import EmulatorOptions, EmulatorServer


def test_health(emu: EmulatorServer) -> None:
    """``GET /_emulator/health`` needs no API key."""
    assert httpx.get(f"{emu.admin_url}/health").json() == {"ok": True}


def test_request_log(api: httpx.Client, emu: EmulatorServer) -> None:
    """``GET /_emulator/requests`` lists API requests with method, path, status and times."""
    api.get("/agents/")
    records = httpx.get(f"{emu.admin_url}/requests").json()
    record = records[-1]
    assert (record["method"], record["path"], record["status"], record["route"]) == (
        "GET",
        "/tenants/demo/api/v2/agents/",
        200,
        "list_agents",
    )
    assert record["finished"] >= record["started"]


def test_admin_requests_are_not_logged(emu: EmulatorServer) -> None:
    """Admin calls stay out of the request log."""
    httpx.get(f"{emu.admin_url}/health")
    assert emu.requests == []


def test_clear_request_log(api: httpx.Client, emu: EmulatorServer) -> None:
    """``DELETE /_emulator/requests`` empties the log."""
    api.get("/agents")
    httpx.delete(f"{emu.admin_url}/requests")
    assert emu.requests == []


def test_set_faults_over_http(api: httpx.Client, emu: EmulatorServer) -> None:
    """``PUT /_emulator/faults`` replaces the rules; ``GET`` shows their hits."""
    rules = [{"method": "GET", "path": "/agents$", "status": 502, "body": "plain", "count": 1}]
    assert httpx.put(f"{emu.admin_url}/faults", json=rules).status_code == 200
    assert api.get("/agents").text == "Proxy error"
    [state] = httpx.get(f"{emu.admin_url}/faults").json()
    assert state["hits"] == 1 and state["exhausted"] is True and state["rule"]["status"] == 502


def test_add_and_clear_faults_over_http(api: httpx.Client, emu: EmulatorServer) -> None:
    """``POST`` adds one rule and ``DELETE`` removes them all."""
    httpx.post(f"{emu.admin_url}/faults", json={"path": "/agents$", "status": 503})
    assert api.get("/agents").status_code == 503
    httpx.delete(f"{emu.admin_url}/faults")
    assert api.get("/agents").status_code == 200


def test_bad_fault_rule_is_422(emu: EmulatorServer) -> None:
    """An unknown key or bad value in a rule is refused with 422."""
    assert httpx.post(f"{emu.admin_url}/faults", json={"colour": "red"}).status_code == 422
    assert httpx.post(f"{emu.admin_url}/faults", json={"probability": 3}).status_code == 422


def test_create_agent_over_http(api: httpx.Client, emu: EmulatorServer) -> None:
    """``POST /_emulator/agents`` adds an agent that the API then lists."""
    created = httpx.post(f"{emu.admin_url}/agents", json={"name": "Worker Probe", "mode": "worker"}).json()
    assert created["mode"] == "worker"
    assert any(a["id"] == created["id"] for a in api.get("/agents").json()["data"])


def test_change_options_over_http(api: httpx.Client, emu: EmulatorServer, aid: str) -> None:
    """``PATCH /_emulator/options`` changes a run-time option such as ``page_size``."""
    for i in range(2):
        api.post(f"/agents/{aid}/conversations", json={"name": f"opt {i}"})
    changed = httpx.patch(f"{emu.admin_url}/options", json={"page_size": 1}).json()
    assert changed["page_size"] == 1 and changed["api_key"] == "<set>"
    assert api.get(f"/agents/{aid}/conversations").json()["has_more"] is True


def test_start_up_only_options_cannot_change(emu: EmulatorServer) -> None:
    """Options such as ``data_dir`` are refused at run time."""
    assert httpx.patch(f"{emu.admin_url}/options", json={"data_dir": "/tmp"}).status_code == 422


def test_inject_a_message(api: httpx.Client, emu: EmulatorServer, conv: str, cid: str) -> None:
    """``POST /_emulator/conversations/{cid}/messages`` adds a message without a run."""
    httpx.post(f"{emu.admin_url}/conversations/{cid}/messages", json={"text": "from elsewhere"})
    [message] = api.get(f"{conv}/messages").json()["data"]
    assert message["role"] == "agent" and message["content"][0]["text"] == "from elsewhere"


def test_admin_token_guards_the_admin_api() -> None:
    """With ``admin_token`` set the admin API wants it as a bearer token."""
    with EmulatorServer(EmulatorOptions(admin_token="letmein")) as emulator:
        assert httpx.get(f"{emulator.admin_url}/health").status_code == 401
        ok = httpx.get(f"{emulator.admin_url}/health", headers={"Authorization": "Bearer letmein"})
        assert ok.status_code == 200
