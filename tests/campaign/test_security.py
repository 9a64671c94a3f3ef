"""Security checks end to end: the API key never leaks, key files must be private, TLS is verified by default,
and what convsync creates for itself is private (0600 files, 0700 folders)."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from tests.api.test_client_tls import https_server  # noqa: F401 - the self-signed HTTPS server fixture
from tests.campaign.crash import server_rendering
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def convsync(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convsync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSYNC_")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}


@pytest.fixture
def secret_key() -> str:
    return "s4w_LEAKCHECK-" + secrets.token_hex(16)


@pytest.fixture
def emu(secret_key: str) -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=secret_key)) as server:
        yield server


def test_the_api_key_appears_in_no_output_of_a_full_debug_session(
    emu: EmulatorServer, secret_key: str, tmp_path: Path, isolated_home: Path
) -> None:
    """A session at -vv (prompts, upload, download, Parquet, a 401, server errors that echo the key, `status`,
    `doctor`, a crash dump) leaves the key in no log, error, status, transcript, state or config file."""
    config_dir = isolated_home / ".config" / "convsync"
    config_dir.mkdir(parents=True, exist_ok=True)
    key_file = config_dir / "api-key"
    key_file.write_text(secret_key + "\n")
    key_file.chmod(0o600)
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / ".convsync-root").write_text("")
    config = config_dir / "config.yaml"
    config.write_text(
        f"server:\n  url: {emu.base_url}\n  api_key_file: {key_file}\n"
        f"root: {root}\nstate_dir: {state}\nlog_level: debug\n"
        "poll: {active_seconds: 0.3, idle_seconds: 1, conversations_seconds: 1, rescan_seconds: 2}\n"
    )
    env = base_env(isolated_home)
    aid = emu.agent_id("Demo Agent")
    cid = emu.create_conversation(aid, "Secrets")
    emu.set_faults(
        [
            # A server that echoes the credential in its error text, and a gateway that refuses it once.
            FaultRule(
                route="list_messages", status=500, body="plain", message=f"bad header Bearer {secret_key}", count=6
            ),
            FaultRule(route="list_files", status=401, body="gateway", count=1),
            FaultRule(route="list_data_frames", status=503, body="envelope", message=f"token {secret_key}", count=1),
        ]
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "convsync", "-vv", "run", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    try:
        folder = root / "Demo Agent" / "Secrets"
        wait_until((folder / "prompt.txt").exists, 30, what="the conversation folder")
        (folder / "inbox" / "data.csv").write_text("a,b\n1,2\n")
        prompts = ["/write out.txt written by the agent", "/frame data.csv numbers", "hello"]
        for text in prompts:
            wait_until(lambda: (folder / "prompt.txt").read_text() == "", 30, what="prompt.txt taken")
            (folder / "prompt.txt").write_text(text + "\n")
        wait_until(lambda: emu.user_messages(cid) == prompts, 60, what="every prompt delivered")
        wait_until((folder / "files" / "out.txt").is_file, 30, what="the download")
        wait_until((folder / "data-frames" / "numbers.parquet").is_file, 30, what="the export")
        wait_until(lambda: (folder / "transcript.md").read_text() == server_rendering(emu, cid), 30, what="transcript")
        outputs = [
            convsync("status", "--json", "--config", str(config), env=env),
            convsync("-vv", "status", "--config", str(config), env=env),
            convsync("-vv", "doctor", "--config", str(config), env=env),
        ]
        daemon.send_signal(signal.SIGABRT)  # a crash: faulthandler dumps every thread's stack
        daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    assert b"Fatal Python error" in log.read_bytes()  # the crash output is part of what is checked
    assert b"DEBUG" in log.read_bytes()
    assert b"Bearer [redacted]" in log.read_bytes()  # the server's echo of the key reached the log, redacted

    needles = [secret_key.encode(), secret_key.removeprefix("s4w_").encode()]
    leaks = []
    for output in outputs:
        for needle in needles:
            if needle.decode() in output.stdout + output.stderr:
                leaks.append(f"output of {output.args[3:]}")
    for tree in (root, state, config_dir, isolated_home, tmp_path):
        for path in tree.rglob("*"):
            if path == key_file or not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                leaks.append(str(path))
    assert not leaks, sorted(set(leaks))


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, isolated_home: Path) -> None:
    """A key file with mode 0644 stops convsync with exit 78, names the file and says `chmod 600`; the key is
    not echoed."""
    key = "s4w_" + secrets.token_hex(12)
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    (root / ".convsync-root").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  url: http://127.0.0.1:9/api/v2\n  api_key_file: {key_file}\nroot: {root}\n")
    result = convsync("run", "--config", str(config), env=base_env(isolated_home))
    assert result.returncode == 78, result.stderr
    assert f"chmod 600 {key_file}" in result.stderr
    assert key not in result.stdout + result.stderr


def test_tls_is_verified_by_default_and_a_ca_bundle_or_the_trust_store_can_be_configured(
    https_server: tuple[str, Path],  # noqa: F811 - the imported fixture
    tmp_path: Path,
    isolated_home: Path,
) -> None:
    """`convsync sync` against a self-signed HTTPS server fails by default (exit 76, a certificate problem);
    with server.ca_bundle, or the OS trust store plus that bundle, it succeeds."""
    url, cert = https_server
    root = tmp_path / "root"
    root.mkdir()
    (root / ".convsync-root").write_text("")
    env = {**base_env(isolated_home), "CONVSYNC_API_KEY": "s4w_tls-campaign"}

    def sync(extra: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  url: {url}\n{extra}root: {root}\nstate_dir: {tmp_path / 'state'}\n")
        return convsync("sync", "--config", str(config), env=env)

    default = sync("")
    assert default.returncode == 76, default.stderr
    assert "certificate" in default.stderr.lower()
    bundle = sync(f"  ca_bundle: {cert}\n")
    assert bundle.returncode == 0, bundle.stderr
    store = sync(f"  truststore: true\n  ca_bundle: {cert}\n")
    assert store.returncode == 0, store.stderr


def test_config_and_state_are_created_private(emu: EmulatorServer, tmp_path: Path, isolated_home: Path) -> None:
    """`convsync init` writes the config 0600 (its folder 0700); the state folder is 0700 and its database,
    journal and lock files 0600."""
    env = {**base_env(isolated_home), "CONVSYNC_API_KEY": emu.api_key}
    root = tmp_path / "Conversations"
    init = convsync("init", "--url", emu.base_url, "--root", str(root), env=env)
    assert init.returncode == 0, init.stderr
    config = isolated_home / ".config" / "convsync" / "config.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    sync = convsync("sync", env=env)
    assert sync.returncode == 0, sync.stderr
    state = isolated_home / ".local" / "state" / "convsync"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    created = [p for p in state.iterdir() if p.is_file()]
    assert any(p.name == "state.db" for p in created)
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
