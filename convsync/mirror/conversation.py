"""One conversation's reconcile, carried out by exactly one worker thread at a time.

The steps, in this order (``docs/layout.md`` explains why the order matters to users):

1. ``inbox/``: files dropped there become ``upload`` entries of the outbox (``convsync.mirror.inbox`` decides
   when a file is complete);
2. ``prompt.txt``: a finished save becomes a ``prompt`` entry (``convsync.mirror.prompt``);
3. the outbox, in order, one entry at a time: uploads through ``inbox.upload``, prompts through the stream
   route with the reply appended live to ``transcript.md``;
4. the server's messages → ``transcript.md`` (``convsync.mirror.transcript``);
5. the server's files → ``files/`` (``convsync.mirror.filesync``);
6. the data frames → ``data-frames/*.parquet`` (``convsync.mirror.dataframes``).

Steps 4 to 6 need the network and run when the conversation is polled, after a reply, or when the transcript
no longer matches the state (deleted, or cut by a crash mid-stream).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path

from convsync import hooks, killpoints
from convsync.api.client import Progress
from convsync.api.models import (
    AgentFailed,
    Message,
    StreamFinished,
    StreamStarted,
    ThreadRenamed,
)
from convsync.api.ratelimit import Lane, current_lane, request_lane
from convsync.errors import (
    ApiError,
    AuthError,
    BadRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    StreamInterrupted,
    TransientError,
)
from convsync.mirror import cancel, charts, dataframes, filesync, inbox, resend
from convsync.mirror.atomic import TEMP_PREFIX
from convsync.mirror.context import ConversationContext, Reporter
from convsync.mirror.folders import (
    CONVERSATION_MARKER,
    DATA_FRAMES,
    FILES,
    INBOX,
    TRANSCRIPT,
    folder_fingerprint,
    populate_conversation,
    read_marker,
)
from convsync.mirror.itemretry import ItemKey, ItemKind, ItemRetries
from convsync.mirror.localfault import PROBE_SECONDS, LocalFault, writable
from convsync.mirror.names import OutsideRoot, keys_of, name_key
from convsync.mirror.plan import Backoff
from convsync.mirror.prompt import (
    PROMPT,
    TAKING,
    NotText,
    Taken,
    decode_prompt,
    open_for_writing,
    should_take,
    take,
    write_failed_prompt,
)
from convsync.mirror.state import OutboxEntry
from convsync.mirror.transcript import LiveTail, apply_plan, plan_transcript, read_tail
from convsync.printable import printable

log = logging.getLogger(__name__)

ACTIVE_SECONDS = 300.0  # a conversation with activity this recent is polled at the fast rate
LIVE_GRACE_SECONDS = 30.0  # how long a completely streamed reply may run ahead of the server before re-rendering
OUTBOX_BACKOFF_CAP = 30.0
NOT_FOUND_BACKOFF_CAP = 60.0
PROGRESS_EVERY_SECONDS = 0.5
FILES_CHECK_SECONDS = 5.0  # files and frames are listed at most this often per conversation
PRE_SEND_FRESH_SECONDS = 5.0  # messages read this recently serve as the baseline of the next send
FOLDER_QUIET_SECONDS = 2.0  # a folder whose entries changed more recently may be being deleted


@dataclass(slots=True)
class Flags:
    """Why a conversation is looked at; hints and timers accumulate them until its worker runs."""

    local: bool = False  # the folder changed (or a rescan): prompts, inbox, outbox
    poll: bool = False  # time to ask the server for messages (and files/frames when due)
    full: bool = False  # ``convsync sync``: everything, now
    # When (time.time_ns) a close-after-write or a rename onto prompt.txt was last seen; 0: none. A signal
    # counts only for a file not written after it: a writer that wrote again after that close is still busy.
    prompt_signal_ns: int = 0
    inbox_hints: set[str] = field(default_factory=set)
    # Set for the one pass, never merged: files and frames wait for a job of the background lane.
    defer_files: bool = False

    def merge(self, other: Flags) -> None:
        self.local |= other.local
        self.poll |= other.poll
        self.full |= other.full
        self.prompt_signal_ns = max(self.prompt_signal_ns, other.prompt_signal_ns)
        self.inbox_hints |= other.inbox_hints

    def __bool__(self) -> bool:
        return self.local or self.poll or self.full or bool(self.prompt_signal_ns) or bool(self.inbox_hints)


@dataclass(slots=True)
class ConversationRuntime:
    """What the engine remembers about one conversation between passes (in memory only).

    Whoever works on the conversation (its reconcile, or an agent pass moving its folder) holds its job key in
    the engine's queue; ``flags`` are guarded by ``flags_lock`` because the watcher adds to them meanwhile.
    """

    cid: str
    flags_lock: threading.Lock = field(default_factory=threading.Lock)
    flags: Flags = field(default_factory=Flags)
    tracker: inbox.InboxTracker = field(default_factory=inbox.InboxTracker)
    backoff: Backoff = field(default_factory=lambda: Backoff(cap=OUTBOX_BACKOFF_CAP))
    retry_at: float = 0.0  # monotonic; the outbox waits until then after a failure
    recheck_at: float | None = None  # monotonic; look again then (a file or prompt settling)
    live_until: float = 0.0  # monotonic; a streamed tail is kept while the server catches up
    active_until: float = 0.0  # monotonic; polled fast until then
    files_due: bool = False  # files/ and data-frames/ should be compared with the server
    files_checked_at: float = 0.0  # monotonic time of the last comparison (0: never)
    fetched: tuple[float, list[Message]] = (float("-inf"), [])  # the last messages read, with the time
    temps_cleaned: bool = False
    reporter: Reporter | None = None  # kept across passes, so each problem is logged once
    items: ItemRetries = field(default_factory=ItemRetries)  # files and frames that failed, on their own backoff
    created: float = field(default_factory=time.time)  # wall clock; older temp files are a crash's leftovers
    seen: tuple[int, ...] | None = None  # folders.folder_fingerprint after the last pass
    last_save: resend.PreviousSave | None = None  # the last text taken from prompt.txt (resend protection)
    local_fault: LocalFault | None = None  # the folder could not be written: probed, not backed off
    # A conversation the server answers 404 for asks for the agent's pass (re-listing) on a backoff, not on
    # every poll: during an outage every conversation 404s, and re-listing per poll used the whole rate limit.
    not_found: Backoff = field(default_factory=lambda: Backoff(cap=NOT_FOUND_BACKOFF_CAP))
    replan_after: float = 0.0  # monotonic

    def add(self, flags: Flags) -> None:
        with self.flags_lock:
            self.flags.merge(flags)

    def pop(self) -> Flags:
        with self.flags_lock:
            flags, self.flags = self.flags, Flags()
        return flags

    def pop_prompt_signal(self) -> int:
        with self.flags_lock:
            signal, self.flags.prompt_signal_ns = self.flags.prompt_signal_ns, 0
        return signal

    def touch(self) -> None:
        self.active_until = time.monotonic() + ACTIVE_SECONDS

    @property
    def active(self) -> bool:
        return time.monotonic() < self.active_until


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine needs to know after a reconcile."""

    transient: ApiError | None = None  # the server could not be reached / failed: retry later
    auth: AuthError | None = None
    gone: bool = False  # the conversation is gone on the server (or its folder locally)
    sent: bool = False  # something went out (prompt or upload): poll fast for a while


class Reconcile:
    """One pass over one conversation; ``run`` never raises for problems the user can act on."""

    def __init__(self, ctx: ConversationContext, rt: ConversationRuntime, flags: Flags) -> None:
        self.ctx = ctx
        self.rt = rt
        self.flags = flags
        self.folder = ctx.folder
        # How the log names the conversation: its folder under the root, as the user sees it (not its ids).
        self._where = printable(f"{ctx.folder.parent.name}/{ctx.folder.name}")
        self.cid = ctx.conversation_id
        self.aid = ctx.agent_id
        self._scan: inbox.InboxScan | None = None
        self._sent = False
        self._prompt_started = False
        self._cancelled = False  # the reply being sent was cancelled (cancel.py)
        self._messages_changed = False
        self._news = False  # the last transcript sync added messages to a transcript that had some
        self._pending: list[OutboxEntry] | None = None  # the outbox as last read, while nothing changed it
        self._held_back = False  # a failure's backoff kept the queue from being tried in this pass

    # --- the pass -------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        report = self.ctx.report
        try:
            if not self.folder.is_dir():
                return Outcome(gone=True)
            if read_marker(self.folder / CONVERSATION_MARKER) != self.cid:
                return Outcome(gone=True)  # being deleted, or the marker was removed: the agent pass decides
            if self.rt.local_fault is not None and not self._local_fault_cleared():
                return Outcome()  # no request while the folder cannot be written
            if self._incomplete() and self._settled():
                populate_conversation(self.ctx.root, self.folder, self.cid)  # put back what the user deleted
            for hint in self.flags.inbox_hints:
                self.rt.tracker.hint(hint)
            self._scan_inbox()
            self._take_prompt(max(self.flags.prompt_signal_ns, self.rt.pop_prompt_signal()))
            if cancel.requested(self.folder):
                self._cancel(None)  # nothing streams now: take back what is queued
            replied = self._send_and_read()
            if replied or self._messages_changed or (self.flags.poll and self.rt.files_checked_at == 0.0):
                self.rt.files_due = True  # the agent ran (or this is the first look): files and frames may be new
            if self.flags.full or (self.rt.files_due and not self.flags.defer_files and self._files_check_allowed()):
                self._sync_files()
                self._export_frames()
                self.rt.files_due = self._items_waiting()
                self.rt.files_checked_at = time.monotonic()
            # Everything that was tried worked, and nothing was held back by a failure's backoff (the retry timer
            # may end the backoff while this pass runs: that is no proof the queue goes out again).
            if not self._held_back and not self._outbox_failing():
                report.clear()
                self.rt.backoff.succeeded()
                self.rt.not_found.succeeded()
                self.rt.replan_after = 0.0
                self._local_fault_over()
            return Outcome(sent=self._sent)
        except RateLimited as exc:
            return self._transient(exc, "the server asks convsync to slow down (rate limit)")
        except TransientError as exc:
            return self._transient(exc, f"the server cannot be reached or failed: {exc}")
        except AuthError as exc:
            report.fail(
                f"the server refused the API key: {exc}",
                "check the key in the config (convsync doctor tests it); queued prompts stay queued",
            )
            return Outcome(auth=exc, sent=self._sent)
        except NotFound:
            now = time.monotonic()
            if now < self.rt.replan_after:
                return Outcome(sent=self._sent)  # the agent's pass was asked for already; it decides
            self.rt.replan_after = now + self.rt.not_found.failed()
            self.ctx.replan()
            return Outcome(gone=True, sent=self._sent)
        except (BadRequest, ProtocolError) as exc:
            report.fail(f"the server answered something unusable: {exc}", "this is retried on the next poll")
            return Outcome(sent=self._sent)
        except OutsideRoot as exc:
            report.fail(str(exc), "this is a bug or a hostile server name; please report it")
            return Outcome(sent=self._sent)
        except OSError as exc:
            report.fail(
                f"cannot write in {self.folder}: {exc}",
                "free disk space or fix the folder's permissions; convsync retries",
            )
            fault = self.rt.local_fault
            since = fault.since if fault is not None else time.time()
            self.rt.local_fault = LocalFault(since, str(exc), time.monotonic() + self.rt.backoff.failed())
            self.rt.retry_at = time.monotonic() + PROBE_SECONDS
            return Outcome(sent=self._sent)
        finally:
            self._final_status()
            self.rt.seen = folder_fingerprint(self.folder)

    def _local_fault_cleared(self) -> bool:
        """Whether the pass may run while the folder has a write fault (``convsync.mirror.localfault``)."""
        fault = self.rt.local_fault
        assert fault is not None
        now = time.monotonic()
        if not writable(self.folder):
            self.rt.local_fault = dataclasses.replace(fault, probe_failed=True)
            self.rt.retry_at = now + PROBE_SECONDS
            return False
        if fault.probe_failed:  # it failed and works now: the fault cleared, go at once
            self.rt.backoff.succeeded()
            self.rt.retry_at = 0.0
            return True
        if now < fault.retry_at:
            self.rt.retry_at = min(fault.retry_at, now + PROBE_SECONDS)
            return False
        return True

    def _local_fault_over(self) -> None:
        """A pass worked after a write fault: ``errors.log`` (unwritable meanwhile) gets the episode."""
        fault, self.rt.local_fault = self.rt.local_fault, None
        if fault is not None:
            self.ctx.report.note(fault.episode(self.folder, time.time()))

    def _send_and_read(self) -> bool:
        """The outbox, then the messages when due; True if a prompt got a reply."""
        with request_lane(Lane.INTERACTIVE):  # whatever brought the pass here, a send is for a person
            replied = self._send_outbox()
        # The read that completes a reply is interactive too; a poll stays in its job's lane.
        with request_lane(Lane.INTERACTIVE if replied else current_lane()):
            if self.flags.poll or self.flags.full or self._transcript_out_of_step():
                self._news = False
                self._sync_transcript(self._get_messages())
                self.ctx.traits.hints.read(self.cid, news=self._news)  # did the server's list announce it?
        return replied

    def _files_check_allowed(self) -> bool:
        """Files and frames are listed at most every ``FILES_CHECK_SECONDS`` (two requests each time): a burst
        of prompts costs one check, made once the burst is over."""
        wait = self.rt.files_checked_at + FILES_CHECK_SECONDS - time.monotonic()
        if wait <= 0:
            return True
        self._recheck_in(wait)
        return False

    def _get_messages(self) -> list[Message]:
        messages = self.ctx.client.get_messages(self.aid, self.cid)
        self.rt.fetched = (time.monotonic(), messages)
        return messages

    def _incomplete(self) -> bool:
        return not all((self.folder / name).exists() for name in (PROMPT, INBOX, FILES, DATA_FRAMES))

    def _settled(self) -> bool:
        """Whether the folder's entries have not changed for a moment. Missing pieces are put back only then:
        while ``rm -r`` empties the folder, recreating them would make it fail with "Directory not empty"."""
        try:
            age = time.time() - self.folder.stat().st_mtime
        except FileNotFoundError:
            return False
        if age >= FOLDER_QUIET_SECONDS:
            return True
        self._recheck_in(FOLDER_QUIET_SECONDS - age)
        return False

    def _transient(self, exc: ApiError, problem: str) -> Outcome:
        delay = self.rt.backoff.failed()
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        self.rt.retry_at = time.monotonic() + delay
        counts = self.ctx.state.outbox_counts(self.cid)
        waiting = counts.prompts + counts.uploads
        self.ctx.report.fail(
            problem,
            f"nothing is lost: {waiting} queued item(s) go out once it works again"
            if waiting
            else "convsync retries by itself",
        )
        return Outcome(transient=exc, sent=self._sent)

    def _outbox_failing(self) -> bool:
        return time.monotonic() < self.rt.retry_at

    def _final_status(self) -> None:
        report = self.ctx.report
        try:
            counts = self.ctx.state.outbox_counts(self.cid)
        except Exception:  # the state is closing (shutdown); the status file keeps its last line
            return
        queued = _queued_text(counts.prompts, counts.uploads)
        if report.problem:
            # An absolute time: the file is written once per attempt, and "retrying in 20 s" would go stale.
            retry = max(0.0, self.rt.retry_at - time.monotonic())
            when = time.strftime("%H:%M:%SZ", time.gmtime(time.time() + retry)) if retry >= 1 else "now"
            suffix = f" ({queued}; next try {'at ' + when if retry >= 1 else when})" if queued else ""
            report.status(f"error: {report.problem}{suffix}")
        elif queued:
            report.status(f"queued: {queued}")
        else:
            report.status("idle")

    # --- 1. inbox -------------------------------------------------------------------------------------------

    def _scan_inbox(self) -> None:
        scan = self._scan_once() if self.flags.full else self.rt.tracker.scan(self.folder / INBOX)
        self._scan = scan
        for problem in scan.problems:
            self.ctx.report.note(f"inbox/{problem.name} {problem.reason}")
        pending = self.ctx.state.pending(self.cid)
        queued = {e.payload for e in pending if e.kind == "upload"}
        new = sorted({*scan.waiting, *(r.name for r in scan.ready)} - queued)
        for name in new:
            self.ctx.state.enqueue(self.cid, "upload", name)
        self._pending = None if new else pending
        if scan.recheck_in is not None:
            self._recheck_in(scan.recheck_in)

    def _scan_once(self) -> inbox.InboxScan:
        """``convsync sync`` cannot watch a file settle: a file unchanged for the unhinted quiet period (by its
        mtime) counts as complete, a younger one as still being written."""
        entries = inbox.list_inbox(self.folder / INBOX)
        cutoff_ns = time.time_ns() - int(inbox.DEFAULT_UNHINTED_QUIET_SECONDS * 1e9)
        settled = [e for e in entries if e.sig.mtime_ns <= cutoff_ns]
        young = tuple(e.name for e in entries if e.sig.mtime_ns > cutoff_ns and e.kind is inbox.EntryKind.FILE)
        scan = inbox.InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0).update(settled)
        return inbox.InboxScan(scan.ready, scan.waiting + young, scan.problems, scan.recheck_in)

    def _recheck_in(self, seconds: float) -> None:
        at = time.monotonic() + max(0.05, seconds)
        self.rt.recheck_at = at if self.rt.recheck_at is None else min(self.rt.recheck_at, at)

    # --- 2. prompt.txt --------------------------------------------------------------------------------------

    def _take_prompt(self, signal_ns: int) -> None:
        prompt = self.folder / PROMPT
        leftover = (self.folder / TAKING).exists()
        if not leftover:
            try:
                st = prompt.stat()
            except FileNotFoundError:
                return
            if st.st_size == 0:
                return
            signalled = signal_ns >= st.st_mtime_ns > 0
            if self.flags.full:
                signalled = signalled or not open_for_writing(prompt)
            if not should_take(
                st.st_size,
                st.st_mtime,
                signalled=signalled,
                now=time.time(),
                open_for_writing=lambda: open_for_writing(prompt),
            ):
                self._recheck_in(st.st_mtime + 3.0 - time.time() if time.time() - st.st_mtime < 3.0 else 3.0)
                return
            if decode_prompt(prompt.read_bytes()) == "":
                return  # whitespace only: no prompt, and the file is left as the user wrote it
        state = self.ctx.state

        def store(taken: Taken) -> None:
            now = time.time()
            new = resend.new_part(taken.text, self._previous_prompt(), now)
            state.enqueue(self.cid, "prompt", new or taken.text, taken.sha256, taken_from=taken.identity)
            self._pending = None
            self.rt.last_save = resend.PreviousSave(taken.text, now)
            if new is not None:
                self.ctx.report.note(
                    "prompt.txt began with the previous prompt (an editor wrote back the text it still showed): "
                    "only the new part after it was sent",
                    "to send the whole text after all, save it into prompt.txt once more; docs/editors.md "
                    "shows how to make your editor reload the emptied file",
                )

        def is_stored(identity: str) -> bool:
            return state.was_taken(self.cid, identity)

        try:
            if take(self.folder, store, is_stored):
                self.rt.touch()
        except NotText as exc:
            self.ctx.report.note(
                str(exc),
                f"save the prompt as UTF-8 text into prompt.txt; the bytes are kept in {exc.kept_as.name}",
            )

    def _previous_prompt(self) -> resend.PreviousSave | None:
        """The previous prompt for the resend protection: the last one taken (after a restart: the last one
        queued), unless the server refused it or a cancel took it back. A prompt never sent cannot be sent
        twice, and a save holding it with more below is the person's new version of it."""
        last = self.ctx.state.last_prompt(self.cid)
        if last is not None and last.state == "failed":
            return None
        if self.rt.last_save is not None:
            return self.rt.last_save
        return resend.PreviousSave(last.payload, last.created_at) if last is not None else None

    # --- 3. the outbox --------------------------------------------------------------------------------------

    def _send_outbox(self) -> bool:
        """Carry out queued entries in order while they succeed; True if a prompt got a reply."""
        replied = False
        while not self.ctx.stopping():
            # The inbox scan just read the outbox; when nothing was queued since, that answer still holds.
            pending = self._pending if self._pending is not None else self.ctx.state.pending(self.cid)
            self._pending = None
            if not pending:
                break
            if self._outbox_failing():
                self._held_back = True
                break
            head = pending[0]
            if head.kind == "upload":
                run = list(takewhile(lambda e: e.kind == "upload", pending))
                if not self._carry_uploads(run):
                    break
                continue
            if not self._send_prompt(head):
                break
            replied = True
        return replied

    def _carry_uploads(self, run: Sequence[OutboxEntry]) -> bool:
        """Upload the ready files of a run of upload entries; True when the whole run is done."""
        scan = self._scan or self.rt.tracker.scan(self.folder / INBOX)
        ready = {r.name: r for r in scan.ready}
        waiting = set(scan.waiting)
        batch: list[tuple[OutboxEntry, inbox.ReadyFile]] = []
        blocked = False
        for entry in run:
            if entry.payload in ready:
                batch.append((entry, ready[entry.payload]))
            elif entry.payload in waiting:
                blocked = True
            else:  # removed, renamed, or a problem entry (reported by the scan): nothing to send
                self.ctx.state.mark_failed(entry.seq, "no longer an uploadable file in inbox/")
        if not batch:
            return not blocked
        names = [r.name for _, r in batch]
        label = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        self.ctx.report.status(f"uploading {label}")
        progress = self._progress("uploading", label, names[0])
        started = time.monotonic()
        try:
            outcome = inbox.upload(
                self.ctx.client, self.aid, self.cid, self.folder, [r for _, r in batch], progress=progress
            )
        finally:
            self.ctx.state.delete_transfer(self.cid, names[0], "up")
        sizes = {r.name: r.sig.size for _, r in batch}
        for name in outcome.moved:
            log.info(
                "%s: uploaded inbox/%s (%s in %.1f s)",
                self._where,
                printable(name),
                _human_bytes(sizes.get(name, 0)),
                time.monotonic() - started,
            )
        seq_of = {entry.payload: entry.seq for entry, _ in batch}
        for remote in outcome.remote:
            self.ctx.state.set_transfer(
                self.cid,
                remote.file_ref,
                "down",
                sha256=filesync.remote_version(remote),
                size=remote.size,
                done_bytes=remote.size,
                local_name=remote.file_ref if remote.file_ref in seq_of else "",
            )
        for name in outcome.moved:
            self.ctx.state.mark_done(seq_of[name])
            self.rt.tracker.forget(name)
        for problem in outcome.failed:
            self.ctx.state.mark_failed(seq_of[problem.name], problem.reason)
            self.ctx.report.note(f"inbox/{problem.name} {problem.reason}")
        self._sent = True
        self.rt.touch()
        return not blocked and not outcome.changed

    def _send_prompt(self, entry: OutboxEntry) -> bool:
        """Send one prompt through the stream route; True when it reached the server (or was found there)."""
        state, report = self.ctx.state, self.ctx.report
        # Messages read a moment ago (the previous reply, the last poll) are fresh enough; else ask the server.
        # (A message posted elsewhere in that moment then shows up after our prompt, and the transcript is
        # rewritten in order when the reply ends.) After an attempt that may have reached the server, always ask.
        fetched_at, fetched = self.rt.fetched
        fresh = entry.state == "queued" and time.monotonic() - fetched_at < PRE_SEND_FRESH_SECONDS
        messages = fetched if fresh else self._get_messages()
        self._sync_transcript(messages)  # messages from elsewhere go before our prompt
        if entry.state == "sending" and _delivered(entry, messages):
            state.mark_done(entry.seq)  # an earlier attempt reached the server after all: never send twice
            self._sent = True
            return True
        state.mark_sending(entry.seq, [m.message_id for m in messages])
        report.status("sending")
        sent_at = datetime.now(UTC)
        self.rt.live_until = time.monotonic() + LIVE_GRACE_SECONDS
        self._prompt_started = False
        cut = False
        try:
            if not self._stream(entry):
                return False  # stopping: the reply is read from the server after the restart
            cut = self._cancelled  # what streamed stands; the server keeps what it stored of the run
        except StreamInterrupted as exc:
            # The prompt reached the server. The reply may never be stored (a cut usually cancels the run) or
            # come later: the half-streamed tail is dropped and the transcript follows the server from here.
            state.mark_done(entry.seq)
            self._sent = True
            cut = True
            log.info("%s: the reply stream was cut (%s); reading the reply from the server", self.folder, exc)
        except TransientError:
            self.rt.fetched = (float("-inf"), [])  # the attempt may have changed the server: read it anew
            if not self._prompt_started:
                self.rt.live_until = 0.0  # nothing was written: the prompt is shown once the server has it
                raise
            cut = True
        except BadRequest as exc:
            state.mark_failed(entry.seq, str(exc))
            kept = write_failed_prompt(self.folder, entry.seq, entry.payload)
            report.note(
                f"the server refused a prompt: {exc}",
                f"its text is kept in {kept.name}; change it and save it into prompt.txt again",
            )
            self.rt.live_until = 0.0
            self._sync_transcript(messages)
            return True
        self.rt.touch()
        if cut:
            self.rt.live_until = 0.0
        final = self._get_messages()
        _observe_clock(self.ctx, entry, final, sent_at)
        reply = final[-1] if final and final[-1].role == "agent" else None
        if reply is not None and not cut:
            seconds = (datetime.now(UTC) - sent_at).total_seconds()
            log.info("%s: reply finished (%d characters in %.1f s)", self._where, len(reply.text), seconds)
        if self._sync_transcript(final, live=not cut):
            self.rt.live_until = 0.0
        if not cut:  # a cut reply may still come: it is read from the server, without a hook
            self._reply_done(reply)
        return True

    def _reply_done(self, reply: Message | None) -> None:
        """Tell the config's ``on_reply`` hook (if any) that a reply finished, or failed."""
        if self.ctx.on_reply is None:
            return
        row = self.ctx.state.conversation(self.cid)
        failed = self.ctx.report.problem is not None and self.ctx.report.problem.startswith("the agent failed")
        self.ctx.on_reply(
            hooks.ReplyDone(
                folder=str(self.folder),
                agent=self.folder.parent.name,
                conversation=row.name if row is not None and row.name else self.folder.name,
                reply=hooks.first_line(reply.text) if reply is not None and not failed else "",
                status="failed" if failed else "ok",
            )
        )

    def _stream(self, entry: OutboxEntry) -> bool:
        """Append the prompt and the streaming reply to the transcript; False when stopped midway."""
        state, report = self.ctx.state, self.ctx.report
        tail = LiveTail(
            self.folder / TRANSCRIPT,
            prompt=entry.payload,
            clock=self.ctx.clock.now,
            on_chart=lambda mid, index, part: charts.write_chart(self.folder, mid, index, part),
        )
        # A cancel is noticed after every piece of the body, keep-alive pings included (cancel.py).
        events = self.ctx.client.stream_message(
            self.aid, self.cid, entry.payload, stop=lambda: cancel.requested(self.folder)
        )
        failed: str | None = None
        fault: OSError | None = None

        def write(step: Callable[[], object]) -> None:
            # A folder that cannot be written (full disk, read-only) stops the live text, never the stream:
            # closing it would make the server cancel the run, and the reply would be lost. Raised at the end.
            nonlocal fault
            if fault is None:
                try:
                    step()
                except OSError as exc:
                    fault = exc

        try:
            for event in events:
                if isinstance(event, StreamStarted):
                    killpoints.reached("send.accepted")
                    state.mark_done(entry.seq)  # agent_ready: the server stored the prompt
                    log.info("%s: prompt sent (%d characters)", self._where, len(entry.payload))
                    self._prompt_started = True
                    self._sent = True
                    write(functools.partial(tail.on_event, event))
                    self._streaming_status()
                elif isinstance(event, ThreadRenamed):
                    state.set_conversation_name(self.cid, event.new_name)
                elif isinstance(event, AgentFailed):
                    failed = f"the agent failed: {event.message or 'no reason given'}"
                    code = f" ({event.code})" if event.code else ""
                    lines = [f"The agent failed{code}: {event.message or 'no reason given'}"]
                    write(functools.partial(tail.notice, "Failed", lines))
                    report.note(failed, "send the prompt again (it is in transcript.md)")
                elif isinstance(event, StreamFinished):
                    break
                else:
                    write(functools.partial(tail.on_event, event))
                if signal := self.rt.pop_prompt_signal():
                    # prompt.txt is taken at once even while a reply streams
                    write(functools.partial(self._take_prompt, signal))
                    self._streaming_status()
                if self.ctx.stopping():
                    return False
                if cancel.requested(self.folder):  # a stat per event: the stream is read event by event anyway
                    break
        except StreamInterrupted:
            if not cancel.requested(self.folder):
                raise  # a cut stream; one that ended because of a cancel is the cancel
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # before the end: the server sees the client go and cancels the run
        return self._stream_ended(entry, tail, failed, fault)

    def _stream_ended(self, entry: OutboxEntry, tail: LiveTail, failed: str | None, fault: OSError | None) -> bool:
        """A cancel is carried out, the run's outcome recorded, a write fault of the live tail raised."""
        if cancel.requested(self.folder):
            if not self._prompt_started:
                self._delivered_before_cancel(entry)
            self._cancel(tail)
            self._cancelled = True
            failed = None
        self.ctx.report.run_ended(failed)
        if fault is not None:
            self.rt.live_until = 0.0  # the live tail is torn: the transcript follows the server once writable
            raise fault
        return True

    def _delivered_before_cancel(self, entry: OutboxEntry) -> None:
        """A cancel that came before the server's confirmation: the server may have stored the prompt all the
        same (it answered, its first event was still on the way). Such a prompt was sent, not taken back."""
        try:
            messages = self._get_messages()
        except ApiError:
            return  # not known: it is taken back with the queue, and the transcript shows it if it was stored
        if _delivered(entry, messages):
            self.ctx.state.mark_done(entry.seq)
            self._prompt_started = self._sent = True

    def _cancel(self, tail: LiveTail | None) -> None:
        """``cancel`` was created: the reply (if ``tail``: it was streaming) is stopped, queued prompts taken back."""
        kept = cancel.take_back(self.folder, self.ctx.state, self.cid)
        self._pending = None
        if tail is not None and not self._prompt_started:
            tail.prompt = None  # never accepted by the server: it is among the prompts taken back
        lines = cancel.notice_lines(tail is not None, kept)
        if lines:
            if tail is None:
                tail = LiveTail(self.folder / TRANSCRIPT, clock=self.ctx.clock.now)
            tail.notice("Cancelled", lines)
            self.ctx.report.note(" ".join(lines))
        cancel.clear(self.folder)
        log.info("%s: cancelled (%d queued prompts taken back)", self._where, len(kept))

    def _streaming_status(self) -> None:
        """``streaming``, and what waits behind the reply (prompts saved meanwhile)."""
        counts = self.ctx.state.outbox_counts(self.cid)
        queued = _queued_text(counts.prompts, counts.uploads)
        self.ctx.report.status(f"streaming (queued: {queued})" if queued else "streaming")

    # --- 4. transcript --------------------------------------------------------------------------------------

    def _transcript_out_of_step(self) -> bool:
        """The file is missing or its size differs from what the state committed (and no reply is live)."""
        if time.monotonic() < self.rt.live_until:
            return False
        rows = self.ctx.state.transcript(self.cid)
        expected = rows[-1].committed_offset if rows else 0
        try:
            return (self.folder / TRANSCRIPT).stat().st_size != expected
        except FileNotFoundError:
            return self._settled()  # deleted: regenerated once the folder is quiet (it may be going away)

    def _sync_transcript(self, messages: Sequence[Message], *, live: bool = False) -> bool:
        """Bring ``transcript.md`` in line with ``messages``. Returns True when the file now holds exactly
        the committed rendering (no live tail left); marks the conversation active on new messages."""
        state = self.ctx.state
        path = self.folder / TRANSCRIPT
        rows = state.transcript(self.cid)
        offset = rows[-1].committed_offset if rows else 0
        size, tail = read_tail(path, offset)
        plan = plan_transcript(rows, size, tail, messages, live=live or time.monotonic() < self.rt.live_until)
        changed = plan.keep != len(rows) or bool(plan.commit)
        if plan.write != "none" or changed:
            if plan.write != "none":
                charts.write_charts(self.folder, messages)  # drawn before the lines that embed them
            apply_plan(path, plan)
            killpoints.reached("transcript.written")
            state.commit_transcript(self.cid, plan.keep, plan.commit)
        if changed:
            self._messages_changed = True
        if changed and rows:
            self._news = True
            self.rt.touch()  # new messages (from a reply or from elsewhere): poll fast for a while
        committed = (
            plan.commit[-1].committed_offset
            if plan.commit
            else (rows[plan.keep - 1].committed_offset if plan.keep else 0)
        )
        try:
            return path.stat().st_size == committed
        except FileNotFoundError:
            return False

    # --- 5. files/ ------------------------------------------------------------------------------------------

    def _clean_temps(self) -> None:
        if not self.rt.temps_cleaned:
            dataframes.remove_stale_temps(self.folder / FILES)
            dataframes.remove_stale_temps(self.folder / DATA_FRAMES)
            _remove_crash_temps(self.folder, before=self.rt.created)
            self.rt.temps_cleaned = True

    def _sync_files(self) -> None:
        self._clean_temps()
        state = self.ctx.state
        remote = self.ctx.client.list_files(self.aid, self.cid)
        self.rt.items.keep_only(ItemKind.FILE, (r.file_ref for r in remote))
        rows = {r.file_ref: r for r in state.transfers(self.cid, "down")}
        todo = filesync.plan_downloads(remote, {ref: r.sha256 for ref, r in rows.items()})
        todo = self.rt.items.fresh_first(ItemKind.FILE, todo, lambda item: item.file_ref)
        taken = keys_of(r.local_name for r in rows.values() if r.local_name)
        taken.add(name_key(charts.CHARTS_DIR))  # convsync's folder in files/: a server file of that name gets a (2)
        for item in todo:
            if self.ctx.stopping():
                return
            key = ItemKey(ItemKind.FILE, item.file_ref)
            if self.rt.items.wait(key):
                continue
            row = rows.get(item.file_ref)
            name = (
                row.local_name if row is not None and row.local_name else filesync.local_name_for(item.file_ref, taken)
            )
            taken.add(name_key(name))
            self.ctx.report.status(f"downloading {name}")
            started = time.monotonic()
            try:
                filesync.download(
                    self.ctx.client,
                    self.aid,
                    self.cid,
                    item,
                    self.folder / FILES,
                    progress=self._progress("downloading", name, None),
                    local_name=name,
                )
            except RateLimited:
                raise
            except (TransientError, BadRequest, ProtocolError, OutsideRoot, NotFound) as exc:
                self._item_failed(key, f"files/{name} could not be downloaded: {exc}")
                if _unreachable(exc):
                    return
                continue
            log.info(
                "%s: downloaded files/%s (%s in %.1f s)",
                self._where,
                printable(name),
                _human_bytes(item.size),
                time.monotonic() - started,
            )
            self.rt.items.succeeded(key)
            state.set_transfer(
                self.cid,
                item.file_ref,
                "down",
                sha256=filesync.remote_version(item),
                size=item.size,
                done_bytes=item.size,
                local_name=name,
            )

    # --- 6. data-frames/ ------------------------------------------------------------------------------------

    def _export_frames(self) -> None:
        state = self.ctx.state
        frames = self.ctx.client.list_data_frames(self.aid, self.cid)
        self.rt.items.keep_only(ItemKind.FRAME, (f.name for f in frames))
        rows = {r.name: r for r in state.frames(self.cid)}
        todo = dataframes.plan_exports(frames, {name: r.fingerprint for name, r in rows.items()})
        todo = self.rt.items.fresh_first(ItemKind.FRAME, todo, lambda info: info.name)
        taken = keys_of(r.file_name for r in rows.values() if r.file_name)
        for info in todo:
            if self.ctx.stopping():
                return
            key = ItemKey(ItemKind.FRAME, info.name)
            if self.rt.items.wait(key):
                continue
            row = rows.get(info.name)
            file_name = (
                row.file_name if row is not None and row.file_name else dataframes.frame_file_name(info.name, taken)
            )
            taken.add(name_key(file_name))
            self.ctx.report.status(f"exporting data frame {info.name}")
            try:
                result = dataframes.export_frame(
                    self.ctx.client,
                    self.aid,
                    self.cid,
                    info,
                    self.folder / DATA_FRAMES,
                    file_name=file_name,
                    parquet_supported=self.ctx.traits.parquet_supported,
                )
            except RateLimited:
                raise
            except (TransientError, BadRequest, ProtocolError, OutsideRoot, NotFound) as exc:
                self._item_failed(key, f"data frame {info.name!r} could not be exported: {exc}")
                if _unreachable(exc):
                    return
                continue
            log.info(
                "%s: exported data frame %s to data-frames/%s (%d rows)",
                self._where,
                printable(info.name),
                printable(result.path.name),
                result.rows,
            )
            self.rt.items.succeeded(key)
            self.ctx.traits.parquet_supported = result.parquet_supported
            state.set_frame(self.cid, info.name, result.fingerprint, file_name)
            if "csv" in self.ctx.frame_formats:
                self._write_csv(result.path)
        if "csv" in self.ctx.frame_formats:  # frames exported before csv was asked for get theirs now
            for row in rows.values():
                parquet = self.folder / DATA_FRAMES / row.file_name
                if row.file_name and parquet.is_file() and not dataframes.csv_path_for(parquet).exists():
                    self._write_csv(parquet)

    def _write_csv(self, parquet: Path) -> None:
        reason = dataframes.write_csv(parquet)
        if reason is not None:
            self.ctx.report.note(
                f"data-frames/{printable(parquet.name)} has no CSV copy: {reason}",
                "read the Parquet file instead (e.g. with duckdb or pandas)",
                once=True,
            )

    # --- per-item failures ----------------------------------------------------------------------------------

    def _item_failed(self, key: ItemKey, problem: str) -> None:
        """One file or frame failed: reported for itself, retried on its own backoff; the others go on."""
        delay = self.rt.items.failed(key)
        self.ctx.report.note(problem, "convsync tries it again by itself, less often each time", once=True)
        log.debug("%s: %s %r retried in %.0f s", self.folder, key.kind.value, key.name, delay)

    def _items_waiting(self) -> bool:
        """Whether a file or frame waits for its retry (the conversation is looked at again then)."""
        wait = self.rt.items.next_due()
        if wait is None:
            return False
        self._recheck_in(wait)
        return True

    # --- progress -------------------------------------------------------------------------------------------

    def _progress(self, verb: str, label: str, upload_ref: str | None) -> Progress:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS and done != total:
                return
            last[0] = now
            shown = f"{done * 100 // total}%" if total else _human_bytes(done)
            self.ctx.report.status(f"{verb} {label} ({shown})")
            if upload_ref is not None:
                self.ctx.state.set_transfer(self.cid, upload_ref, "up", size=total, done_bytes=done)

        return progress


# --- helpers ------------------------------------------------------------------------------------------------


def _remove_crash_temps(folder: Path, *, before: float) -> None:
    """Temp files of ``status``, ``transcript.md`` or a marker that a crash left in the conversation folder.

    Only those older than ``before`` (when this engine first looked at the conversation): a younger one may be
    an agent pass writing the marker right now.
    """
    for path in folder.glob(TEMP_PREFIX + "*"):
        try:
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mtime < before:
                path.unlink()
        except OSError:
            continue


def _unreachable(exc: Exception) -> bool:
    """A failure of the connection, not an answer about this item (status 0: refused, timed out, reset). The
    other items are left for the next pass, whose listing shows whether the server can be reached: trying each
    one in turn here would cost every item its retries and timeouts (minutes against a server that is gone)."""
    return isinstance(exc, TransientError) and not exc.status


def _delivered(entry: OutboxEntry, messages: Sequence[Message]) -> bool:
    """Whether a user message with the entry's text appeared after the entry's baseline."""
    baseline = set(entry.baseline or ())
    return any(m.role == "user" and m.message_id not in baseline and m.text == entry.payload for m in messages)


def _observe_clock(
    ctx: ConversationContext, entry: OutboxEntry, messages: Sequence[Message], sent_at: datetime
) -> None:
    baseline = set(entry.baseline or ())
    for m in reversed(messages):
        if m.role == "user" and m.message_id not in baseline and m.text == entry.payload:
            ctx.clock.observe(m.created_at, sent_at)
            return


def _queued_text(prompts: int, uploads: int) -> str:
    parts = []
    if prompts:
        parts.append(f"{prompts} prompt{'s' if prompts != 1 else ''}")
    if uploads:
        parts.append(f"{uploads} upload{'s' if uploads != 1 else ''}")
    return ", ".join(parts)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
