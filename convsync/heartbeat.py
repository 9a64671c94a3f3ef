"""The daemon's heartbeat: ``daemon.json`` in the state directory, so that others can tell whether it runs.

``convsync run`` writes it at start, every status interval (``daemon.STATUS_INTERVAL_SECONDS``) and when it
stops cleanly: its pid, when it started, when it last beat, when it last had an answer from the server, its
last problem, and when it stopped. ``convsync status`` and ``convsync doctor`` read it (with the pid's
liveness) to say "daemon: running (pid 123, up 2 h, server reached 3 s ago)" or "daemon: NOT running — …".
A daemon that stops cleanly also writes ``daemon stopped`` into the ``status`` file of every conversation
folder it mirrored, so a folder never claims ``idle`` while nothing watches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from convsync.config import Config
from convsync.mirror.atomic import write_atomic
from convsync.mirror.folders import ROOT_MARKER, STATUS
from convsync.mirror.names import OutsideRoot, child
from convsync.mirror.state import DB_NAME, State, StateError

HEARTBEAT_FILE = "daemon.json"
STALE_SECONDS = 30.0  # a heartbeat older than this (six status intervals) means the daemon is stuck
STOPPED_STATUS = "daemon stopped"


@dataclass(frozen=True, slots=True)
class Beat:
    """What ``daemon.json`` holds; times are wall-clock seconds since the epoch."""

    pid: int
    started: float
    beat: float
    last_contact: float | None = None  # the last answer of the server (any HTTP status)
    last_error: str | None = None
    stopped: float | None = None  # set by a clean stop


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The daemon as ``convsync status`` and ``doctor`` show it."""

    running: bool
    text: str  # "running (pid 123, up 2 h, server reached 3 s ago)" / "NOT running — start it with …"
    pid: int | None = None
    started: float | None = None
    last_contact: float | None = None
    last_error: str | None = None
    stopped: float | None = None


class Heartbeat:
    """The writing side, owned by ``convsync run``; a failed write is never fatal (the daemon goes on)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / HEARTBEAT_FILE
        now = time.time()
        self._beat = Beat(os.getpid(), now, now)

    def _write(self) -> None:
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps(asdict(self._beat)) + "\n", durable=False)

    def start(self) -> None:
        self._write()

    def update(self, *, last_contact: float | None, last_error: str | None) -> None:
        self._beat = replace(self._beat, beat=time.time(), last_contact=last_contact, last_error=last_error)
        self._write()

    def stopped(self) -> None:
        now = time.time()
        self._beat = replace(self._beat, beat=now, stopped=now)
        self._write()


def read_beat(state_dir: Path) -> Beat | None:
    try:
        data = json.loads((state_dir / HEARTBEAT_FILE).read_text(encoding="utf-8"))
        return Beat(**data)
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_hint(unit: str = "convsync") -> str:
    """How to start the daemon of ``unit`` (``convsync.instances.unit_for``)."""
    return f"start it with `systemctl --user start {unit}` (or run `convsync run`)"


def daemon_state(state_dir: Path, *, now: float | None = None, unit: str = "convsync") -> DaemonState:
    """Whether a daemon runs on ``state_dir``, and the line that says so (its hints name ``unit``)."""
    now = time.time() if now is None else now
    hint = start_hint(unit)
    beat = read_beat(state_dir)
    if beat is None:
        return DaemonState(False, f"not started (no daemon has run with this state directory) — {hint}")

    def state(running: bool, text: str) -> DaemonState:
        return DaemonState(running, text, beat.pid, beat.started, beat.last_contact, beat.last_error, beat.stopped)

    if beat.stopped is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(beat.stopped))
        return state(False, f"NOT running (stopped {when}) — {hint}")
    if not _alive(beat.pid):
        return state(False, f"NOT running (pid {beat.pid} ended without stopping cleanly) — {hint}")
    if now - beat.beat > STALE_SECONDS:
        return state(
            False,
            f"NOT responding (pid {beat.pid} has not reported for {_ago(now - beat.beat)}) — "
            f"see its log (journalctl --user -u {unit}) and restart it (systemctl --user restart {unit})",
        )
    contact = f"server reached {_ago(now - beat.last_contact)} ago" if beat.last_contact else "server not reached yet"
    return state(True, f"running (pid {beat.pid}, up {_ago(now - beat.started)}, {contact})")


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def mark_folders_stopped(config: Config, state_dir: Path) -> int:
    """Write ``daemon stopped`` into the ``status`` file of every conversation folder; how many were written.

    Nothing is written under a root without its marker (the disk may not be mounted)."""
    if not (config.root / ROOT_MARKER).is_file():
        return 0
    try:
        state = State(state_dir / DB_NAME, readonly=True)
    except StateError:
        return 0
    written = 0
    try:
        agents = {a.id: a.folder for a in state.agents()}
        for conv in state.conversations(status="active"):
            agent_folder = agents.get(conv.agent_id)
            if agent_folder is None:
                continue
            try:
                folder = child(config.root, child(config.root, config.root, agent_folder), conv.folder)
            except OutsideRoot:
                continue
            if folder.is_dir():
                with contextlib.suppress(OSError):
                    write_atomic(folder / STATUS, STOPPED_STATUS + "\n", durable=False)
                    written += 1
    finally:
        state.close()
    return written
