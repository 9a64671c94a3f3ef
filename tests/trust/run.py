"""Running ``convsync`` as users do (a subprocess with a fresh HOME) on a config written for the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KEY = "s4w_trust-test-key"
REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    """A config for ``url`` (``extra``: more lines under ``server:``), a marked root and a private state dir."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / ".convsync-root").write_text("")
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: {url}\n{extra}root: {root}\nstate_dir: {tmp_path / 'state'}\n")
    return path


def convsync(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSYNC_", "SSL_CERT_"))}
    full = {**base, "HOME": str(home), "PYTHONPATH": str(REPO), "CONVSYNC_API_KEY": KEY, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "convsync", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
