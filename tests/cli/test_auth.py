"""A refused key at start: `convsync run` stops with exit 77 and the fix, quoting the server's hint readably."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root
from tests.cli.conftest import KEY_ENV, convsync, write_config


@pytest.fixture
def config(emulator: EmulatorServer, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    init_root(root)
    return write_config(tmp_path / "config.yaml", emulator.base_url, root, tmp_path / "state")


def test_run_with_a_refused_key_exits_77_with_the_fix(config: Path) -> None:
    """A wrong key: `run` exits 77 within its first pass (no endless retrying), naming the fix."""
    started = time.monotonic()
    done = convsync("run", "--config", str(config), env={KEY_ENV: "s4w_revoked-key"}, timeout=60)
    assert done.returncode == 77, done.stderr
    assert time.monotonic() - started < 30
    assert "refused the API key from the environment variable" in done.stderr
    assert "fix:" in done.stderr
    assert "convsync doctor" in done.stderr
    assert "revoked-key" not in done.stderr
    assert "ready" not in done.stderr


def test_the_servers_hint_survives_redaction(config: Path) -> None:
    """The gateway's hint `Expected key starting with "s4w_"` reaches the user whole; the key itself does not."""
    done = convsync("run", "--config", str(config), env={KEY_ENV: "sk-live-oops"}, timeout=60)
    assert done.returncode == 77, done.stderr
    assert 'Expected key starting with "s4w_"' in done.stderr
    assert "sk-live-oops" not in done.stderr
