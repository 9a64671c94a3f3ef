"""Starting, stopping, restarting and persisting the emulator, in-process and as ``convsync emulator``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.emulator.conftest import DEMO, client_for
from tests.waiting import wait_until


def test_binds_loopback_by_default(fresh: EmulatorServer) -> None:
    """The default host is 127.0.0.1 and the base URL carries the tenant and v2 prefix."""
    assert fresh.options.host == "127.0.0.1"
    assert fresh.base_url == f"http://127.0.0.1:{fresh.port}/tenants/demo/api/v2"
    assert fresh.admin_url == f"http://127.0.0.1:{fresh.port}/_emulator"


def test_seeded_agents_have_stable_ids() -> None:
    """Two fresh emulators give the seeded agent the same id."""
    with EmulatorServer() as one, EmulatorServer() as two:
        assert one.agent_id(DEMO) == two.agent_id(DEMO)


def test_restart_serves_the_same_port_with_the_same_state(fresh: EmulatorServer) -> None:
    """``stop()`` refuses connections; ``start()`` comes back on the same port with the data kept."""
    aid = fresh.agent_id(DEMO)
    with client_for(fresh) as api:
        cid = api.post(f"/agents/{aid}/conversations", json={"name": "survivor"}).json()["id"]
    port = fresh.port
    fresh.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fresh.base_url}/agents")
    fresh.start()
    assert fresh.port == port
    with client_for(fresh) as api:
        assert any(c["id"] == cid for c in api.get(f"/agents/{aid}/conversations").json()["data"])


def test_stop_breaks_a_stream_in_flight(fresh: EmulatorServer) -> None:
    """A stream open while the server stops ends in a transport error, and the reply is not committed."""
    aid = fresh.agent_id(DEMO)
    with client_for(fresh) as api:
        cid = api.post(f"/agents/{aid}/conversations", json={"name": "interrupted"}).json()["id"]
        with (
            pytest.raises(httpx.TransportError),
            api.stream(
                "POST", f"/agents/{aid}/conversations/{cid}/stream", json={"content": "/slow 50 100"}
            ) as response,
        ):
            for line in response.iter_lines():
                if "concat_string" in line:
                    fresh.stop()
    assert [m["role"] for m in fresh.messages(cid)] == ["user"]


def test_state_survives_a_new_emulator_on_the_same_data_dir(tmp_path: Path) -> None:
    """With a data dir, conversations, messages, files and frames outlive the emulator process."""
    options = EmulatorOptions(data_dir=tmp_path / "state")
    with EmulatorServer(options) as first, client_for(first) as api:
        aid = first.agent_id(DEMO)
        cid = api.post(f"/agents/{aid}/conversations", json={"name": "kept"}).json()["id"]
        conv = f"/agents/{aid}/conversations/{cid}"
        api.post(f"{conv}/files", files=[("files", ("data.csv", b"a,b\n1,2\n"))])
        api.post(f"{conv}/messages", json={"content": "/frame data.csv"})
        messages = api.get(f"{conv}/messages").json()["data"]
    with EmulatorServer(options) as second, client_for(second) as api:
        assert second.agent_id(DEMO) == aid
        assert [a["name"] for a in api.get("/agents").json()["data"]].count(DEMO) == 1
        assert api.get(f"{conv}/messages").json()["data"] == messages
        assert api.get(f"{conv}/files/download/", params={"file_ref": "data.csv"}).content == b"a,b\n1,2\n"
        assert api.get(f"{conv}/data-frames/data").json() == [{"a": 1, "b": 2}]


def test_temp_state_is_removed_on_close() -> None:
    """Without a data dir the state lives in a temp dir that ``close()`` deletes."""
    emulator = EmulatorServer().start()
    aid = emulator.agent_id(DEMO)
    cid = emulator.create_conversation(aid, "temp")
    emulator.inject_message(cid, "x")
    root = emulator.state_dir
    assert root.exists()
    emulator.close()
    assert not root.exists()


def test_in_process_helpers_see_what_the_api_did(fresh: EmulatorServer) -> None:
    """``user_messages``, ``messages``, ``conversations`` and ``file_hashes`` read the emulator's state."""
    aid = fresh.agent_id(DEMO)
    with client_for(fresh) as api:
        cid = api.post(f"/agents/{aid}/conversations", json={"name": "seen"}).json()["id"]
        api.post(f"/agents/{aid}/conversations/{cid}/messages", json={"content": "hello"})
        api.post(f"/agents/{aid}/conversations/{cid}/files", files=[("files", ("f.txt", b"f"))])
    assert fresh.user_messages(cid) == ["hello"]
    assert [m["role"] for m in fresh.messages(cid)] == ["user", "agent"]
    assert fresh.conversations(aid)[0]["id"] == cid
    assert set(fresh.file_hashes(cid)) == {"f.txt"}


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    """``convsync emulator`` prints its URL and key, answers requests and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "convsync", "emulator", "--port", "0", "--api-key", "s4w_cli-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        key_line = process.stdout.readline()
        assert first.startswith("Agent API emulator serving at http://127.0.0.1:")
        assert key_line.strip() == "API key: s4w_cli-key"
        base_url = first.rsplit(" ", 1)[1].strip()
        agents = httpx.get(f"{base_url}/agents", headers={"Authorization": "Bearer s4w_cli-key"}).json()
        assert [a["name"] for a in agents["data"]] == [DEMO]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()


def test_cli_serves_a_local_agent_server_without_auth(tmp_path: Path) -> None:
    """``convsync emulator --auth none`` says no key is needed and serves /api/public/v1 without one."""
    process = subprocess.Popen(
        [sys.executable, "-m", "convsync", "emulator", "--port", "0", "--auth", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert process.stdout.readline().strip() == "API key: none needed (no auth, like a local agent server)"
        origin = first.rsplit(" ", 1)[1].strip().split("/tenants/")[0]
        agents = httpx.get(f"{origin}/api/public/v1/agents").json()
        assert [a["name"] for a in agents["data"]] == [DEMO]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()


def test_cli_stops_on_sigint_too(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) stops the emulator cleanly as well."""
    process = subprocess.Popen(
        [sys.executable, "-m", "convsync", "emulator", "--port", "0", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Agent API emulator serving at")
        assert "any key starting with s4w_" in process.stdout.readline()
        wait_until((tmp_path / "d" / "emulator.sqlite3").exists, what="the state file")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
