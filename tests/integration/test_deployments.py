"""Every deployment of the Agent API: the gateway's Bearer key, a Snowflake token, and a local agent server
without a key at {base}/api/public/v1; the mirror, doctor and the emulator agree on each."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convsync.config import Config, parse_config
from convsync.doctor import run_doctor
from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.mirror.folders import init_root
from convsync.trust import trust_warnings
from tests.integration.conftest import AGENT, Mirror
from tests.waiting import wait_until

KEY = "s4w_test-key"


def local_url(emu: EmulatorServer) -> str:
    return f"{emu.origin}/api/public/v1"


@pytest.fixture
def make_mirror(tmp_path: Path) -> Iterator[Any]:
    """Starts the mirror against an emulator with the given options and ``server.auth``; stops both after."""
    started: list[tuple[EmulatorServer, Mirror]] = []

    def make(scheme: str, **options: Any) -> Mirror:
        emu = EmulatorServer(EmulatorOptions(api_key=KEY, **options)).start()
        root = tmp_path / "root"
        init_root(root)
        config = Config(
            url=local_url(emu),
            api_key="" if scheme == "none" else KEY,
            auth=scheme,  # type: ignore[arg-type]
            root=root,
            state_dir=tmp_path / "state",
            poll_active_seconds=0.3,
            poll_idle_seconds=2.0,
            poll_conversations_seconds=0.5,
            rescan_seconds=2.0,
            rate_limit_requests=300,
        )
        mirror = Mirror(emu, root, config, emu.agent_id(AGENT))
        started.append((emu, mirror))
        mirror.start()
        return mirror

    yield make
    for emu, mirror in started:
        mirror.stop()
        emu.close()


def mirror_one_prompt(mirror: Mirror) -> None:
    folder = mirror.agent_dir / "Chat"
    wait_until(mirror.agent_dir.is_dir, 10, what="the agent folder")
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("hello from this deployment\n")
    transcript = folder / "transcript.md"
    wait_until(
        lambda: transcript.is_file() and "You said: hello from this deployment" in transcript.read_text(),
        15,
        what="the reply in transcript.md",
    )
    mirror.wait_idle(folder)
    assert (folder / "transcript.md").read_text() == mirror.server_rendering(cid)


def test_snowflake_token_mirrors_a_conversation(make_mirror: Any) -> None:
    """auth: snowflake sends Snowflake Token="<key>" and a conversation is mirrored on /api/public/v1."""
    mirror = make_mirror("snowflake", auth_scheme="snowflake")
    mirror_one_prompt(mirror)
    assert {r.status for r in mirror.emu.requests} <= {200}
    assert all(r.path.startswith("/api/public/v1/") for r in mirror.emu.requests)


def test_no_auth_mirrors_a_local_agent_server(make_mirror: Any) -> None:
    """auth: none needs no key and mirrors a conversation from a local agent server without auth."""
    mirror = make_mirror("none", auth=False)
    mirror_one_prompt(mirror)
    assert {r.status for r in mirror.emu.requests} <= {200}


def test_a_reload_to_another_auth_takes_effect(make_mirror: Any) -> None:
    """A deployment moved to Snowflake tokens: a reload with auth: snowflake makes the mirror work again."""
    mirror = make_mirror("bearer")
    mirror.emu.configure(auth_scheme="snowflake")
    assert mirror.engine is not None
    mirror.config = dataclasses.replace(mirror.config, auth="snowflake")
    mirror.engine.reload(mirror.config)
    mirror_one_prompt(mirror)


def test_bearer_key_is_refused_where_a_snowflake_token_is_expected() -> None:
    """The emulator in Snowflake mode refuses a Bearer key, and accepts the token in any scheme case."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, auth_scheme="snowflake")) as emu:
        url = f"{local_url(emu)}/agents"
        assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": f'snowflake Token="{KEY}"'}).status_code == 200


def test_bearer_scheme_is_case_insensitive() -> None:
    """Like the gateway, the emulator takes `bearer` and `BEARER` as well as `Bearer`."""
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as emu:
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert httpx.get(f"{emu.base_url}/agents", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200


def write_config(tmp_path: Path, url: str, auth: str) -> Path:
    root = tmp_path / "root"
    init_root(root)
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: {url}\n  auth: {auth}\nroot: {root}\nstate_dir: {tmp_path / 'state'}\n")
    return path


@pytest.mark.parametrize(("auth", "options"), [("snowflake", {"auth_scheme": "snowflake"}), ("none", {"auth": False})])
def test_doctor_checks_each_auth(
    auth: str, options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor passes with auth snowflake (the key sent as a Snowflake token) and none (no key at all)."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY if auth != "none" else "")
    with EmulatorServer(EmulatorOptions(api_key=KEY, **options)) as emu:
        lines: list[str] = []
        code = run_doctor(write_config(tmp_path, local_url(emu), auth), say=lines.append)
    out = "\n".join(lines)
    assert "ok       API key:" in out and "ok       server:" in out, (code, out)
    assert "PROBLEM  server" not in out and "Demo Agent" in out


def test_doctor_says_when_the_server_wants_a_key_auth_none_does_not_send(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """auth: none against a server that wants a key: doctor's server check fails and names server.auth."""
    lines: list[str] = []
    code = run_doctor(write_config(tmp_path, emulator.base_url, "none"), say=lines.append)
    out = "\n".join(lines)
    assert code != 0 and "server.auth" in out


def test_no_auth_to_another_host_is_a_trust_warning(tmp_path: Path) -> None:
    """auth: none to a host that is not this machine warns; to localhost it does not."""
    remote = parse_config("server:\n  url: https://agents.example.com/api/public/v1\n  auth: none\n", tmp_path / "c")
    local = parse_config("server:\n  url: http://localhost:8000/api/public/v1\n  auth: none\n", tmp_path / "c")
    assert [w.key for w in trust_warnings(remote)] == ["server.auth"]
    assert trust_warnings(local) == ()
    assert remote.api_key == "" and remote.auth == "none"
