"""``convsync status``: every conversation's folder, id, state, queue, transfers and last error; first, any
setting that weakens trust in the server (``convsync.trust``).

Reads the state database through a read-only connection, so it works while the daemon runs (WAL lets readers
in without blocking the writer) and never changes anything.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

from convsync.config import Config
from convsync.mirror.engine import state_path
from convsync.mirror.folders import ROOT_MARKER
from convsync.mirror.state import State, StateError
from convsync.printable import printable
from convsync.trust import trust_warnings


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
    transfers: list[str]  # uploads in progress: "name 42% (12.0 MiB of 28.6 MiB)"
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
    except StateError:
        return None
    try:
        agents = {a.id: a.folder for a in state.agents()}
        uploads: dict[str, list[str]] = {}
        for t in state.transfers(direction="up"):
            pct = f"{t.done_bytes * 100 // t.size}%" if t.size else "?"
            uploads.setdefault(t.conversation_id, []).append(
                f"{t.file_ref} {pct} ({_mib(t.done_bytes)} of {_mib(t.size)})"
            )
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


def print_status(config: Config, as_json: bool) -> int:
    report = collect(config)
    if report is None:
        message = f"no state yet: convsync has not run with this configuration (root {config.root})"
        if as_json:
            document: dict[str, object] = {
                "root": str(config.root),
                "state_db": None,
                "conversations": [],
                "note": message,
            }
            print(json.dumps({**document, "warnings": _warnings(config)}))
        else:
            _print_warnings(_warnings(config))
            print(message)
        return 0
    if as_json:
        print(json.dumps(asdict(report), indent=2, ensure_ascii=False))
        return 0
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
            queue.append(f"{c.queued_prompts} prompt(s) queued")
        if c.queued_uploads:
            queue.append(f"{c.queued_uploads} upload(s) queued")
        state = "" if c.state == "active" else f" [{c.state}]"
        out.write(f"\n{printable(c.folder)}{state}\n  id: {printable(c.id)}\n  status: {printable(c.activity)}\n")
        if queue:
            out.write(f"  queue: {', '.join(queue)}\n")
        for t in c.transfers:
            out.write(f"  uploading: {printable(t)}\n")
        if c.last_error:
            out.write(f"  last error: {printable(c.last_error)}\n")
    return 0
