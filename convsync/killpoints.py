"""Kill points: a SIGKILL right after a chosen durable step, for the enumerated crash campaign.

``CONVSYNC_KILL_AT=<step>[@<n>]`` makes the process kill itself (SIGKILL, nothing runs after it) the ``n``-th
time (default 1) it reaches ``<step>``. ``CONVSYNC_KILL_TRACE=<file>`` appends the name of every step reached to
that file (how the campaign learns which steps a workload reaches). Both are read once, at import: in a normal
run ``reached`` is a function that does nothing, so the instrumented code pays one call per step and nothing
else. ``STEPS`` lists every step with where it is; ``bench/crash_campaign.py --enumerate`` kills at each.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

KILL_AT_ENV = "CONVSYNC_KILL_AT"
TRACE_ENV = "CONVSYNC_KILL_TRACE"

# step → the durable step it follows (each is a commit, an fsync, a rename or a server's answer that changed it)
STEPS: dict[str, str] = {
    "prompt.exchanged": "prompt.txt swapped with an empty file (or renamed) to .prompt.taking, nothing stored yet",
    "prompt.stored": "a taken prompt committed to the outbox (SQLite), .prompt.taking still there",
    "prompt.taken": ".prompt.taking unlinked",
    "send.marked": "an outbox entry marked 'sending' with its baseline (commit), before the request",
    "send.accepted": "the server stored the prompt (agent_ready), before the outbox commit",
    "outbox.done": "an outbox entry (prompt or upload) marked done (commit)",
    "upload.queued": "a file in inbox/ queued in the outbox (commit)",
    "upload.committed": "the server committed an upload, before anything is moved",
    "upload.moved": "an uploaded file renamed from inbox/ to files/, before the folders' fsync",
    "transfer.recorded": "a file's version recorded in the state (commit) after an upload or download",
    "download.synced": "a downloaded file fsynced under its temp name, before the rename",
    "download.renamed": "a downloaded file renamed into files/, before the folder's fsync",
    "export.synced": "a Parquet export fsynced under its temp name, before the rename",
    "export.renamed": "a Parquet export renamed into data-frames/, before the folder's fsync",
    "export.recorded": "an export's fingerprint committed to the state",
    "transcript.written": "transcript.md appended to or rewritten, before its state commit",
    "transcript.committed": "the transcript's messages and offsets committed to the state",
    "transcript.live": "a chunk of a streaming reply appended to transcript.md",
    "atomic.renamed": "a file written atomically (status, marker, transcript rewrite) renamed into place",
    "create.recorded": "a mkdir's create recorded as pending (commit), before the request",
    "create.answered": "the server created a conversation, before it is bound",
    "conversation.bound": "a conversation bound to its folder (commit)",
}


def _noop(step: str) -> None:  # noqa: ARG001 - the signature of ``reached``
    return None


class _Killer:
    def __init__(self, target: str | None, trace: str | None) -> None:
        self.step, self.nth = target, 1
        if target is not None and "@" in target:
            name, _, count = target.partition("@")
            self.step, self.nth = name, max(1, int(count or 1))
        self.trace = trace
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, step: str) -> None:
        with self.lock:
            if self.trace is not None:
                with open(self.trace, "a", encoding="utf-8") as out:  # noqa: PTH123 - one line per step
                    out.write(step + "\n")
            if step != self.step:
                return
            self.seen += 1
            if self.seen < self.nth:
                return
        os.kill(os.getpid(), signal.SIGKILL)


def _choose() -> Callable[[str], None]:
    target, trace = os.environ.get(KILL_AT_ENV) or None, os.environ.get(TRACE_ENV) or None
    if target is None and trace is None:
        return _noop
    return _Killer(target, trace)


reached = _choose()
"""``reached(step)``: call right after the durable step ``step`` (a name in ``STEPS``)."""
