"""``convsync status``: every conversation's folder, id, state, queue, transfers and last error; first, any
setting that weakens trust in the server (``convsync.trust``).

Reads the state database through a read-only connection, so it works while the daemon runs (WAL lets readers
in without blocking the writer) and never changes anything; needs no API key. The running daemon's live
figures (from its control socket) come first when there is one; without one, its heartbeat
(``convsync.heartbeat``) says why (stopped when, ended without stopping, never ran); once a daemon has run and
no longer does, the command exits 3, like ``systemctl status`` of a stopped unit. ``--json`` prints the
versioned schema of ``docs/status-json.md`` (``SCHEMA_VERSION``): numbers as numbers, never preformatted text.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from convsync.cli import Exit
from convsync.config import Config
from convsync.heartbeat import DaemonState, daemon_state
from convsync.instances import unit_for
from convsync.mirror.engine import state_path
from convsync.mirror.folders import ROOT_MARKER
from convsync.mirror.state import State, StateMissing
from convsync.printable import printable
from convsync.trust import trust_warnings

SCHEMA_VERSION = 1  # of the --json output; raised on any incompatible change (docs/status-json.md)


@dataclass(frozen=True, slots=True)
class Transfer:
    file: str
    done_bytes: int
    size_bytes: int

    @property
    def text(self) -> str:
        pct = f"{self.done_bytes * 100 // self.size_bytes}%" if self.size_bytes else "?"
        return f"{self.file} {pct} ({_mib(self.done_bytes)} of {_mib(self.size_bytes)})"


@dataclass(frozen=True, slots=True)
class ConversationStatus:
    folder: str  # relative to the root: "<agent folder>/<conversation folder>"
    id: str
    agent_id: str
    name: str  # the server's name (may differ from the folder: names are bound once)
    state: str  # active | detached | deleted
    activity: str  # the status file's line: idle / sending / streaming / uploading x (42%) / error: …
    queued_prompts: int
    queued_uploads: int
    transfers: list[Transfer]  # uploads in progress
    last_error: str | None


@dataclass(frozen=True, slots=True)
class StatusReport:
    root: str
    root_ok: bool
    state_db: str
    conversations: list[ConversationStatus]
    warnings: list[str]  # settings that weaken trust in the server (convsync.trust), each with its fix


def collect(config: Config) -> StatusReport | None:
    """The report, or ``None`` when convsync has not run with this config yet (no state database)."""
    path = state_path(config)
    root_ok = (config.root / ROOT_MARKER).is_file()
    try:
        state = State(path, readonly=True)
    except StateMissing:  # not yet, or a daemon is making it this moment
        return None
    # Any other StateError (corrupt or newer) goes to the caller: exit 65, not "nothing mirrored yet".
    try:
        agents = {a.id: a.folder for a in state.agents()}
        uploads: dict[str, list[Transfer]] = {}
        for t in state.transfers(direction="up"):
            uploads.setdefault(t.conversation_id, []).append(Transfer(t.file_ref, t.done_bytes, t.size))
        rows = []
        for c in state.conversations():
            counts = state.outbox_counts(c.id)
            rows.append(
                ConversationStatus(
                    folder=f"{agents.get(c.agent_id, '?')}/{c.folder}",
                    id=c.id,
                    agent_id=c.agent_id,
                    name=c.name,
                    state=c.status,
                    activity=c.activity,
                    queued_prompts=counts.prompts,
                    queued_uploads=counts.uploads,
                    transfers=uploads.get(c.id, []),
                    last_error=c.last_error,
                )
            )
    finally:
        state.close()
    return StatusReport(str(config.root), root_ok, str(path), rows, _warnings(config))


def _warnings(config: Config) -> list[str]:
    return [str(w) for w in trust_warnings(config)]


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"WARNING {warning}")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def print_status(config: Config, as_json: bool, live: dict[str, Any] | None = None) -> int:
    """Print the report (``live``: the running daemon's answer to ``status``, or None when none runs); exit 3
    (``Exit.DAEMON_NOT_RUNNING``) when the daemon of the state directory stopped, crashed or hangs."""
    report = collect(config)
    beat = daemon_state(state_path(config).parent, unit=unit_for(config.config_file, config.profile))
    # A daemon that never ran is no failure (a person who only runs `convsync sync` asks for the conversations);
    # one that stopped, crashed or hangs is, like `systemctl status` of a stopped unit.
    stopped = live is None and not beat.running and beat.pid is not None
    code = Exit.DAEMON_NOT_RUNNING if stopped else Exit.OK
    if as_json:
        print(json.dumps(as_document(config, report, live, beat), indent=2, ensure_ascii=False))
        return code
    print(printable(_daemon_line(live, beat)))
    if report is None:
        _print_warnings(_warnings(config))
        print(f"no state yet: convsync has not run with this configuration (root {config.root})")
        return code
    out = sys.stdout
    _print_warnings(report.warnings)
    print(f"root: {report.root}" + ("" if report.root_ok else f"  (MISSING {ROOT_MARKER}: is the disk mounted?)"))
    print(f"state: {report.state_db}")
    active = [c for c in report.conversations if c.state == "active"]
    others = [c for c in report.conversations if c.state != "active"]
    if not report.conversations:
        print("no conversations yet")
    for c in active + others:
        queue = []
        if c.queued_prompts:
            queue.append(f"{c.queued_prompts} prompt{'' if c.queued_prompts == 1 else 's'}")
        if c.queued_uploads:
            queue.append(f"{c.queued_uploads} upload{'' if c.queued_uploads == 1 else 's'}")
        state = "" if c.state == "active" else f" [{c.state}]"
        out.write(f"\n{printable(c.folder)}{state}\n  id: {printable(c.id)}\n")
        if c.name:
            out.write(f"  name on the server: {printable(c.name)}\n")
        out.write(f"  status: {printable(c.activity)}\n")
        if queue:
            out.write(f"  queued: {', '.join(queue)}\n")
        for t in c.transfers:
            out.write(f"  uploading: {printable(t.text)}\n")
        if c.last_error:
            out.write(f"  last error: {printable(c.last_error)}\n")
    return code


def _daemon_line(live: dict[str, Any] | None, beat: DaemonState) -> str:
    """``live`` (the control socket's answer) says it runs; the heartbeat adds how long and when the server last
    answered, or why it does not run."""
    if live is None:
        if beat.running:
            return f"daemon: {beat.text}; its control socket did not answer"
        return f"daemon: {beat.text} (figures below are from the state files)"
    head = _running_text(live, beat)
    if not live.get("ready"):
        return f"daemon: {head}, starting: first scan; {live.get('summary', '')}"
    return f"daemon: {head}: {live.get('summary', '')}"


def _running_text(live: dict[str, Any], beat: DaemonState) -> str:
    """The heartbeat's text when it speaks of the daemon that answered, else what the answer itself says."""
    return beat.text if beat.running and beat.pid == live.get("pid") else f"running (pid {live.get('pid')})"


def as_document(
    config: Config, report: StatusReport | None, live: dict[str, Any] | None, beat: DaemonState | None = None
) -> dict[str, Any]:
    """The ``--json`` document (docs/status-json.md)."""
    beat = beat or daemon_state(state_path(config).parent, unit=unit_for(config.config_file, config.profile))
    daemon: dict[str, Any] = {
        "running": live is not None or beat.running,
        "text": beat.text if live is None else _running_text(live, beat),
        "started": beat.started,
        "last_contact": beat.last_contact,
        "stopped": beat.stopped,
    }
    if live is not None:
        daemon |= {
            "pid": live.get("pid"),
            "ready": bool(live.get("ready")),
            "conversations": live.get("conversations"),
            "queued_prompts": live.get("queued_prompts"),
            "queued_uploads": live.get("queued_uploads"),
            "last_error": live.get("last_error"),
        }
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "root": str(config.root),
        "root_ok": (config.root / ROOT_MARKER).is_file(),
        "state_db": None,
        "daemon": daemon,
        "warnings": _warnings(config),
        "conversations": [],
    }
    if report is not None:
        document |= {"root_ok": report.root_ok, "state_db": report.state_db, "warnings": report.warnings}
        document["conversations"] = [
            asdict(c)
            | {
                "transfers": [
                    {
                        "direction": "up",
                        "file": t.file,
                        "done_bytes": t.done_bytes,
                        "size_bytes": t.size_bytes,
                        "percent": round(t.done_bytes * 100 / t.size_bytes, 1) if t.size_bytes else None,
                    }
                    for t in c.transfers
                ]
            }
            for c in report.conversations
        ]
    return document
