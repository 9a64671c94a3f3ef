"""systemd/convsync.service: what `service install` writes, verified by systemd-analyze without warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convsync.cli import Exit
from convsync.daemon import STOP_TIMEOUT_SECONDS
from convsync.service import DEFAULT_EXEC_START, render_unit

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "convsync.service"
VENV_CONVSYNC = Path(sys.executable).parent / "convsync"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def settings(text: str) -> dict[str, str]:
    """The unit's `Key=value` lines (comments skipped; the last one wins)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_repository_unit_is_the_rendered_template() -> None:
    """systemd/convsync.service is exactly what render_unit produces, so the two cannot drift apart."""
    assert UNIT.read_text() == render_unit(DEFAULT_EXEC_START)


@needs_systemd_analyze
def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    """systemd-analyze --user verify passes with empty stderr (ExecStart pointed at this venv's convsync)."""
    assert VENV_CONVSYNC.exists(), "pip install -e . puts the convsync script next to the interpreter"
    unit = tmp_path / "convsync.service"
    unit.write_text(UNIT.read_text().replace(f"ExecStart={DEFAULT_EXEC_START}", f"ExecStart={VENV_CONVSYNC} run"))

    done = verify(unit, tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@needs_systemd_analyze
def test_unit_with_credential_enabled_verifies(tmp_path: Path) -> None:
    """The documented LoadCredential= line, uncommented, verifies too."""
    text = UNIT.read_text().replace(f"ExecStart={DEFAULT_EXEC_START}", f"ExecStart={VENV_CONVSYNC} run")
    unit = tmp_path / "convsync.service"
    unit.write_text(text.replace("#LoadCredential=", "LoadCredential="))

    done = verify(unit, tmp_path)

    assert (done.returncode, done.stderr) == (0, "")


def test_unit_is_a_notify_service_with_watchdog() -> None:
    """Type=notify with NotifyAccess=main, a watchdog, reload by SIGHUP, restart on failure within limits."""
    unit = settings(UNIT.read_text())

    assert unit["Type"] == "notify"
    assert unit["NotifyAccess"] == "main"
    assert unit["WatchdogSec"] == "60s"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Restart"] == "on-failure"
    assert unit["StartLimitBurst"] == "5"
    assert unit["WantedBy"] == "default.target"
    assert unit["ExecStart"].endswith(" run")


def test_unit_does_not_restart_on_errors_a_restart_cannot_fix() -> None:
    """RestartPreventExitStatus lists exactly the usage, unusable-state, already-running, untrusted-certificate,
    auth and config exit codes."""
    codes = {int(code) for code in settings(UNIT.read_text())["RestartPreventExitStatus"].split()}

    assert codes == {Exit.USAGE, Exit.STATE_UNUSABLE, Exit.ALREADY_RUNNING, Exit.TLS_UNTRUSTED, Exit.AUTH, Exit.CONFIG}


def test_unit_hardening_needs_no_namespaces() -> None:
    """The hardening is the seccomp/prctl kind that works in user units; nothing needing mount namespaces."""
    unit = settings(UNIT.read_text())

    for key in ("NoNewPrivileges", "RestrictRealtime", "LockPersonality", "MemoryDenyWriteExecute"):
        assert unit[key] == "yes", key
    assert unit["SystemCallArchitectures"] == "native"
    for namespaced in (
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
    ):
        assert namespaced not in unit


def test_unit_stop_timeout_leaves_room_for_a_graceful_stop() -> None:
    """TimeoutStopSec is longer than the daemon's own bound on stopping the engine."""
    assert int(settings(UNIT.read_text())["TimeoutStopSec"].removesuffix("s")) > STOP_TIMEOUT_SECONDS
