"""`convsync status --json`: the daemon object never contradicts itself."""

from __future__ import annotations

from pathlib import Path

from convsync.config import parse_config
from convsync.heartbeat import DaemonState
from convsync.statusreport import as_document


def test_a_daemon_that_answered_is_not_described_as_not_running(tmp_path: Path) -> None:
    """With a live answer but a stale heartbeat, daemon.text says running (pid), as daemon.running does."""
    config = parse_config(
        "server:\n  url: https://example.com/tenants/t/api/v2\n  api_key_env: NO_SUCH_KEY\n"
        f"root: {tmp_path / 'root'}\n",
        source=tmp_path / "config.yaml",
        require_key=False,
    )
    stale = DaemonState(running=False, text="NOT running (it ended without stopping)", pid=41)
    live = {"ok": True, "pid": 42, "ready": True, "summary": "0 conversations"}
    daemon = as_document(config, None, live, stale)["daemon"]
    assert (daemon["running"], daemon["text"], daemon["pid"]) == (True, "running (pid 42)", 42)
