"""Running ``convsync`` as a user does: a subprocess in the test's fresh HOME, the emulator on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer

KEY_ENV = "CONVSYNC_TEST_API_KEY"


def convsync(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``convsync ARGS`` (this checkout's) with the test's environment (fresh HOME), plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "convsync", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(path: Path, url: str, root: Path, state: Path, extra: str = "") -> Path:
    path.write_text(
        f"server:\n  url: {url}\n  api_key_env: {KEY_ENV}\nroot: {root}\nstate_dir: {state}\n{extra}",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key="s4w_test-key", chunk_delay=0.0)) as emu:
        yield emu
