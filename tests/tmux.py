"""Real terminal programs (editors) driven through tmux, on a private tmux server per test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path


class Tmux:
    """One tmux server (``-L`` socket of its own) with one session running ``argv`` in ``cwd``."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.socket = f"convsync-test-{uuid.uuid4().hex[:12]}"
        extra = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        self._tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "-c", str(cwd), *extra, "--", *argv)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def type(self, text: str) -> None:
        """Type ``text`` literally (a newline is typed as Enter)."""
        for i, line in enumerate(text.split("\n")):
            if i:
                self.keys("Enter")
            if line:
                self._tmux("send-keys", "-t", "t", "-l", line)

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name: ``Escape``, ``Enter``, ``C-x``…"""
        self._tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def alive(self) -> bool:
        try:
            return "t" in self._tmux("list-sessions", "-F", "#{session_name}").split()
        except subprocess.CalledProcessError:
            return False

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)
