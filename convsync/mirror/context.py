"""What one conversation's worker works with: its folder, the client, the state, and how it reports.

``Reporter`` writes the conversation's ``status`` file (one line, atomically, only when it changes), mirrors
it into the state database for ``convsync status``, and appends one whole line per new problem to
``errors.log``, always with what to do about it. Text from the server in them is made printable (no control
characters) and cannot forge the ``- fix:`` that starts convsync's advice.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from convsync.api.client import AgentClient
from convsync.hooks import ReplyDone
from convsync.mirror.atomic import append_record, read_regular, write_atomic
from convsync.mirror.folders import ERRORS_LOG, STATUS
from convsync.mirror.hints import ChangeHints
from convsync.mirror.state import State
from convsync.printable import printable

log = logging.getLogger(__name__)
_FIX = re.compile(r"-(\s*)fix:", re.IGNORECASE)


def _one_line(text: str) -> str:
    return " ".join(printable(text).split())


# "GET /tenants/T/api/v2/agents/<uuid>/conversations/<uuid>/messages: …" → "GET messages: …": the folder the
# problem is reported in (or named by the log line) already says which conversation; the ids say nothing.
_REQUEST_PATH = re.compile(
    r"\b(GET|POST|PUT|PATCH|DELETE|HEAD) (?:/[^\s:]*)?/agents/[^/\s:]+(?:/conversations/[^/\s:]+)?(/[^\s:]*)?:"
)


def without_ids(text: str) -> str:
    """``text`` with each request path of an agent or conversation cut to its route (``GET messages``)."""
    return _REQUEST_PATH.sub(lambda m: f"{m.group(1)} {(m.group(2) or '/conversation').lstrip('/')}:", text)


def _problem_line(problem: str) -> str:
    """A problem (which may quote the server) as one printable line in which no ``- fix:`` appears."""
    return _FIX.sub(lambda m: m.group(0)[:-1] + "\\x3a", _one_line(without_ids(problem)))


class ServerClock:
    """The server's idea of now: local UTC time plus the offset last observed on one of its messages.

    Transcript headings written while a reply streams use it, so they match the server's timestamps (shown to
    the minute) even when the two clocks disagree by a little.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + timedelta(seconds=offset)

    def observe(self, server_time: datetime, local_time: datetime) -> None:
        """A message the server stamped ``server_time`` was sent by us at ``local_time``."""
        offset = (server_time - local_time).total_seconds()
        if abs(offset) < 24 * 3600:  # a wildly wrong stamp (1970) says nothing about the clock
            with self._lock:
                self._offset = offset


class Reporter:
    """One conversation's voice: its ``status`` file, ``errors.log``, the state's activity, the log."""

    def __init__(
        self,
        state: State,
        cid: str,
        folder: Path,
        *,
        recorded: tuple[str, str | None] | None = None,
        status: str | None = None,
    ) -> None:
        """``recorded``: the (activity, last error) the state database already holds for the conversation;
        ``status``: what the ``status`` file is known to say (``None``: read it before the first write)."""
        self._state = state
        self._cid = cid
        self.folder = folder
        self._recorded = recorded
        self._status: str | None = status
        self._problem: str | None = None
        self._run_error: str | None = None  # the last reply failed: shown until a reply succeeds
        self._logged: str | None = None
        self._noted: set[str] = set()

    @property
    def problem(self) -> str | None:
        return self._problem or self._run_error

    def run_ended(self, failure: str | None) -> None:
        """A reply ended: ``failure`` says why it failed (shown in ``status`` and as the last error until the
        next reply succeeds), ``None`` that it succeeded."""
        if failure != self._run_error:
            self._run_error = failure
            self._record()

    def status(self, text: str) -> None:
        """Show ``text`` (one line) in ``status`` and ``convsync status``; written only when it changes."""
        line = _one_line(text)
        if line == self._status:
            return
        if self._status is None:  # first status of this process: the file may already say it
            with contextlib.suppress(OSError):
                found = read_regular(self.folder / STATUS)
                if found is not None and found[1].decode("utf-8", errors="replace").strip() == line:
                    self._status = line
                    self._record()
                    return
        self._status = line
        try:
            write_atomic(self.folder / STATUS, line + "\n", durable=False)
        except FileNotFoundError:
            pass  # the folder went away meanwhile; the agent pass notices
        except OSError as exc:
            log.warning("cannot write %s: %s", self.folder / STATUS, exc)
        self._record()

    def _record(self) -> None:
        """Mirror the status line and problem into the state database (only when they changed)."""
        now = (self._status or "", self.problem)
        if now != self._recorded:
            self._state.set_activity(self._cid, *now)
            self._recorded = now

    def fail(self, problem: str, fix: str) -> None:
        """A problem the user should know about: logged once per distinct problem, shown until ``clear``."""
        problem = _problem_line(problem)
        self._problem = problem
        if problem != self._logged:
            self._logged = problem
            self.note(problem, fix)
        self._record()

    def note(self, problem: str, fix: str = "", *, once: bool = False) -> None:
        """Append one line to ``errors.log`` (and the log) without changing the status.

        ``once``: only the first time this process sees exactly this problem (a file the server refuses on
        every poll is reported once, not every poll).
        """
        if once:
            if problem in self._noted:
                return
            self._noted.add(problem)
        problem = _problem_line(problem)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} {problem} - fix: {_one_line(fix)}\n" if fix else f"{stamp} {problem}\n"
        try:
            append_record(self.folder / ERRORS_LOG, line)
        except OSError as exc:
            log.warning("cannot append to %s: %s", self.folder / ERRORS_LOG, exc)
        log.warning("%s: %s (fix: %s)", self.where, problem, fix)

    @property
    def where(self) -> str:
        """The conversation as the log names it: its folder under the root ("Agent/Conversation")."""
        return printable(f"{self.folder.parent.name}/{self.folder.name}")

    def clear(self) -> None:
        """The last problem is solved (logged once, as its appearance was)."""
        if self._problem is not None:
            log.info("%s: working again (the problem was: %s)", self.where, self._problem)
            self._problem = None
            self._logged = None
            self._record()  # a failed reply stays the last error until a reply succeeds


@dataclass(slots=True)
class ServerTraits:
    """What was learnt about the server, shared by all conversations (e.g. no Parquet output: use JSON)."""

    parquet_supported: bool | None = None
    hints: ChangeHints = field(default_factory=ChangeHints)  # the list's updated_at, and whether it is trusted


@dataclass(frozen=True, slots=True)
class ConversationContext:
    """Everything a step of one conversation needs; the files/frames modules receive the same values."""

    root: Path
    agent_id: str
    conversation_id: str
    folder: Path
    client: AgentClient
    state: State
    report: Reporter
    clock: ServerClock
    traits: ServerTraits
    stopping: Callable[[], bool]
    replan: Callable[[], None]  # ask for the agent's pass (the conversation may be gone on the server)
    on_reply: Callable[[ReplyDone], object] | None = None  # the config's done-hook (convsync.hooks), if any
    frame_formats: tuple[str, ...] = ("parquet",)  # data_frames.formats: "csv" adds <name>.csv beside each frame
