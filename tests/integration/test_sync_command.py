"""`convsync sync` (a subprocess, as users run it) and `convsync demo` end to end against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from convsync.api.client import AgentClient
from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root

KEY_ENV = "CONVSYNC_TEST_API_KEY"


def write_config(path: Path, emu: EmulatorServer, root: Path, state: Path) -> Path:
    path.write_text(
        f"server:\n  url: {emu.base_url}\n  api_key_env: {KEY_ENV}\nroot: {root}\nstate_dir: {state}\n",
        encoding="utf-8",
    )
    return path


def convsync(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_ENV: key}
    return subprocess.run(
        [sys.executable, "-m", "convsync", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: equal snapshots mean nothing was written."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def write_requests(emu: EmulatorServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in emu.requests if r.method not in ("GET", "HEAD")]


def test_sync_twice_the_second_pass_changes_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A second `convsync sync` right after the first writes no file and makes no write request."""
    root, state = tmp_path / "root", tmp_path / "state"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator, root, state)
    aid = emulator.agent_id("Demo Agent")
    history = emulator.create_conversation(aid, "History")
    emulator.inject_message(history, "an old question", role="user")
    emulator.inject_message(history, "an old answer", role="agent")
    with AgentClient(emulator.base_url, emulator.api_key) as client:
        made = client.create_conversation(aid, "Outputs")
        client.post_message(aid, made.id, "/write out.txt hello from the agent")
        client.post_message(aid, made.id, "/bigframe sales 50 3")

    first = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert first.returncode == 0, first.stderr
    agent_dir = root / "Demo Agent"
    local = agent_dir / "Local work"
    local.mkdir()
    (local / "prompt.txt").write_text("Please look at numbers.csv\n")
    (local / "inbox" / "numbers.csv").parent.mkdir(exist_ok=True)
    (local / "inbox" / "numbers.csv").write_text("a,b\n1,2\n")
    old = time.time() - 60
    os.utime(local / "inbox" / "numbers.csv", (old, old))

    second = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert second.returncode == 0, second.stderr
    cid = (local / ".conversation").read_text().strip()
    assert emulator.user_messages(cid) == ["Please look at numbers.csv"]
    assert (local / "files" / "numbers.csv").read_text() == "a,b\n1,2\n"
    assert "numbers.csv" in emulator.file_hashes(cid)
    outputs = next(p for p in agent_dir.iterdir() if (p / "files" / "out.txt").exists())
    assert (outputs / "files" / "out.txt").read_text() == "hello from the agent"
    assert (outputs / "data-frames" / "sales.parquet").stat().st_size > 0
    assert "an old answer" in (agent_dir / "History" / "transcript.md").read_text()

    before = snapshot(root)
    emulator.clear_requests()
    third = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert third.returncode == 0, third.stderr
    assert write_requests(emulator) == []
    assert [r.path for r in emulator.requests if "/files/download" in r.path or "/data-frames/" in r.path] == []
    assert snapshot(root) == before


def test_sync_without_the_root_marker_exits_69(emulator: EmulatorServer, tmp_path: Path) -> None:
    """An unmounted root (no marker) is refused with the documented exit code and a clear message."""
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "config.yaml", emulator, root, tmp_path / "state")
    result = convsync("sync", "--config", str(config), key=emulator.api_key)
    assert result.returncode == 69
    assert ".convsync-root" in result.stderr
    assert list(root.iterdir()) == []


def test_status_lists_every_conversation(emulator: EmulatorServer, tmp_path: Path) -> None:
    """`convsync status --json` shows each conversation's folder, id, state and queue."""
    root = tmp_path / "root"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator, root, tmp_path / "state")
    cid = emulator.create_conversation(emulator.agent_id("Demo Agent"), "Shown")
    assert convsync("sync", "--config", str(config), key=emulator.api_key).returncode == 0
    result = convsync("status", "--json", "--config", str(config), key=emulator.api_key)
    assert result.returncode == 0, result.stderr  # no daemon ever ran (only `sync` did): not a failure
    report = json.loads(result.stdout)
    [entry] = report["conversations"]
    assert (entry["folder"], entry["id"], entry["state"], entry["queued_prompts"]) == (
        "Demo Agent/Shown",
        cid,
        "active",
        0,
    )


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`python -m convsync demo` plays its session against the built-in emulator and exits 0."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "convsync", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    folder = tmp_path / "demo" / "Conversations" / "Demo Agent" / "Quarterly sales"
    assert (folder / "data-frames" / "sales.parquet").is_file()
    assert "You said: Hello!" in (folder / "transcript.md").read_text()
