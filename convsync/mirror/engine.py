"""The sync engine: agents and conversations on the server ↔ folders under the root.

It composes the parts and runs the threads (all owned, all joined by ``stop``)::

    watcher     watchdog observer → ``_on_hint``: a path becomes a job (``routing``), debounced
                (``debounce_ms``); started once the first lists pass has built the folders (``watchstart``),
                then a rescan covers what it could not see
    scheduler   timers → jobs (``timers``): the conversation lists (``poll_conversations_seconds``), the local
                rescan (``rescan_seconds``), message polls (``pollpolicy``), rechecks and retries
    workers     a small pool running jobs; a job key is never run by two workers at once, so one conversation
                is handled by one thread at a time and its prompts go out in order

Jobs (``scheduler``, each in a lane of the request budget): ``ListsJob`` resolves agents and plans every
agent against the server's conversation lists, ``RescanJob`` plans every agent against the disk only and
looks at every changed conversation folder (both ``listspass``); ``AgentJob`` plans one agent against the
disk (``agentpass``); ``ConversationJob`` reconciles one conversation (``conversation``). Which agents and
conversations are mirrored, and the folder indexes, are ``selection``'s; the runtimes ``runtimes``'; the
problems shown in ``STATUS=`` ``problems``'. No part imports this module: each is handed what it needs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from convsync import hooks, paths
from convsync.api.client import AgentClient
from convsync.api.ratelimit import Lane, request_lane
from convsync.config import Config
from convsync.errors import ApiError, RootUnavailable
from convsync.mirror.agentpass import AgentPass
from convsync.mirror.context import ConversationContext, Reporter, ServerClock, ServerTraits
from convsync.mirror.conversation import PRE_SEND_FRESH_SECONDS, ConversationRuntime, Flags, Outcome, Reconcile
from convsync.mirror.folders import check_root
from convsync.mirror.listspass import ListsPass
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.problems import Problems
from convsync.mirror.report import Summary, SyncReport
from convsync.mirror.routing import route
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.scheduler import (
    LISTS,
    RESCAN,
    AgentJob,
    ConversationJob,
    Job,
    ListsJob,
    RescanJob,
    Scheduler,
    Timer,
    TimerKind,
)
from convsync.mirror.selection import Selection
from convsync.mirror.state import DB_NAME, AgentRow, ConversationRow, State
from convsync.mirror.timers import timer_jobs
from convsync.mirror.watchstart import WatcherStartup
from convsync.watch import Hint

__all__ = ["WORKERS", "Engine", "Summary", "SyncReport", "build_client", "state_path"]

log = logging.getLogger(__name__)

WORKERS = 5  # one of them takes interactive jobs only, so a prompt never waits for a worker
HEALTH_STALL_SECONDS = 60.0
SCHEDULER_TICK = 1.0  # the scheduler wakes at least this often (timers wake it earlier)


def build_client(config: Config) -> AgentClient:
    # The engine retries with its own backoff; don't hold a worker for long.
    return AgentClient.from_config(config, max_retries=2)


def state_path(config: Config) -> Path:
    """The state database of ``config``: in ``state_dir``, else the user state dir."""
    return paths.state_dir(config.state_dir) / DB_NAME


class Engine:
    def __init__(self, config: Config, *, client: AgentClient | None = None) -> None:
        self._config = config
        self._client = client if client is not None else build_client(config)
        self._owns_client = client is None
        self._retired: list[AgentClient] = []
        self._state = State(state_path(config))
        self._clock = ServerClock()
        self._traits = ServerTraits()
        # The scheduler's lock also guards the engine's shared state (runtimes, indexes, the folders being
        # built); it is never held across I/O. The scheduler thread waits on ``_cond``, the workers elsewhere.
        self._sched = Scheduler()
        self._cond = self._sched.changed
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_lists = 0.0
        self._next_rescan = 0.0
        self._polls = PollPolicy(config, self._sched.add_timer, hints=self._traits.hints)
        self._runtimes = Runtimes(self._cond, self._polls.first)
        self._selection = Selection(self._state, self._cond)
        self._problems = Problems()
        self._watch = WatcherStartup(self._on_hint, self._problems.set)
        self._orphan_signals: set[tuple[str, str]] = set()  # prompt saves in folders not bound yet
        self._building: set[tuple[str, str]] = set()  # (agent folder, folder) built but not bound yet
        # Lists passes started and finished, and the last one's server error: what full_pass() waits for.
        self._passes_started = 0
        self._passes_done = 0
        self._pass_error: ApiError | None = None
        self._heartbeat = time.monotonic()
        self._started = False
        self._agents = AgentPass(self._state, lambda: self._client, self)
        self._lists = ListsPass(
            config=lambda: self._config,
            client=lambda: self._client,
            state=self._state,
            sched=self._sched,
            lock=self._cond,
            agents=self._agents,
            selection=self._selection,
            runtimes=self._runtimes,
            problems=self._problems,
            hints=self._traits.hints,
            stopping=self._stopping.is_set,
        )
        self._bind_root()
        self._rebuild_index()

    # --- public interface -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watcher, the scheduler and the workers; returns at once.

        Raises ``RootUnavailable`` when the root has no marker at start-up (later, a missing marker pauses
        all action until it is back).
        """
        check_root(self._config.root)
        self._started = True
        # The watcher starts after the first lists pass (in ``_run_job``): on a new root that pass builds every
        # conversation folder, and watchdog walking each one as it is renamed into place costs seconds of CPU.
        # When it built folders, the watcher waits for their first reconciles as well (the watch job).
        now = time.monotonic()
        with self._cond:
            self._next_lists = now
            self._next_rescan = now + self._config.rescan_seconds
            self._sched.due_at(LISTS, now, Lane.FIRST_LOOK)
        self._spawn("convsync-scheduler", self._scheduler_loop)
        for i in range(WORKERS):
            self._spawn(f"convsync-worker-{i + 1}", self._worker_loop)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the first full scan finished (agents resolved, folders planned)."""
        return self._ready.wait(timeout)

    @property
    def watching(self) -> bool:
        """Whether the watcher runs: from the first scan on, or once the folders it built had their first look."""
        return self._watch.running

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every thread; a reply being streamed is abandoned (it is read from the server next time)."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            self._sched.work.notify_all()
        self._watch.stop(timeout / 4)
        for thread in self._threads:
            thread.join(max(0.0, deadline - timeout / 2 - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            # A worker blocked in a request: closing the client makes that request fail at once.
            log.warning("a worker is still busy; closing the connection to stop it")
            self._close_clients()
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.error("threads did not stop in time: %s", ", ".join(stuck))
        self._threads = [t for t in self._threads if t.is_alive()]
        self._close_clients()
        if not self._threads:
            self._state.close()

    def reload(self, config: Config) -> None:
        """Apply a new configuration; queued work (in the state database) is kept."""
        old = self._config
        client_keys = ("url", "auth", "api_key", "verify_tls", "ca_bundle", "use_truststore", "timeout_seconds")
        rate_keys = ("rate_limit_requests", "rate_limit_window_seconds", "rate_limit_background_share")
        changed = any(getattr(old, k) != getattr(config, k) for k in client_keys + rate_keys)
        new_client = self._owns_client and changed
        with self._cond:
            self._config = config
            if new_client:
                self._retired.append(self._client)
                self._client = build_client(config)
            self._sched.due_at(LISTS, time.monotonic(), Lane.INTERACTIVE)
            self._next_rescan = time.monotonic()
            self._cond.notify_all()
        if config.root != old.root and self._started:
            self._bind_root()
            self._rebuild_index()
            self._watch.restart(config.root, config.rescan_seconds)  # not started yet: the lists job starts it
        self._update_intervals()
        self._respread_polls()
        log.info("configuration applied")

    def _respread_polls(self) -> None:
        """Re-time every scheduled poll for the current intervals.

        Polls timed under the old intervals would otherwise all still fire at their old times (after a lower
        rate limit, a backlog behind the new limiter for minutes); each gets a new time spread over its new
        interval instead. Queued work is untouched: it lives in the state database and the runtimes' flags.
        """
        now = time.monotonic()

        def window_of(cid: str) -> str:
            rt = self._runtimes.peek(cid)
            if rt is not None and rt.active:
                return "active"
            return "first" if rt is None or rt.fetched[0] == float("-inf") else "idle"

        with self._cond:
            self._next_lists = now + self._polls.lists_interval(self._config)
            self._polls.respread(now, window_of)
            # Entries superseded above are skipped when they surface; drop them now so the heap stays small.
            self._sched.drop_timers(lambda t: t.kind is not TimerKind.POLL or self._polls.current(t))
            self._cond.notify_all()

    def run_once(self) -> SyncReport:
        """One full blocking pass (``convsync sync``): lists, folders, prompts, outbox, messages, files.

        Local work (taking prompts into the outbox) happens even when the server fails; the server's error is
        raised at the end (``TransientError`` → exit 75, ``AuthError`` → exit 77).
        """
        check_root(self._config.root)
        failure = self._lists_pass()
        if failure is not None:
            self._lists.local()
        errors: list[str] = [str(failure)] if failure is not None else []
        cids = [c.id for c in self._active_conversations()]
        for cid in cids:
            outcome = self._run_conversation(cid, Flags(local=True, poll=True, full=True))
            if failure is None and outcome is not None:
                failure = outcome.auth or outcome.transient
            rt = self._runtimes.peek(cid)
            if rt is not None and rt.reporter is not None and rt.reporter.problem:
                errors.append(f"{rt.reporter.folder}: {rt.reporter.problem}")
        if failure is not None:
            raise failure
        counts = self._state.outbox_counts()
        agents = len(self._configured_agents())
        return SyncReport(agents, len(cids), counts.prompts, counts.uploads, tuple(errors))

    def summary(self) -> Summary:
        counts = self._state.outbox_counts()
        # Counted by SQLite: this runs every status interval, and loading every row costs CPU when idle.
        n = self._state.count_conversations("active", [a.id for a in self._configured_agents()])
        return Summary(n, counts.prompts, counts.uploads, self._problems.shown())

    def full_pass(self, timeout: float | None = None, *, first: bool = False) -> ApiError | None:
        """Ask for a pass over the server's lists and every folder now, wait for its lists part; its server error.

        With ``first``, no new pass: wait for the first one (the daemon stops at start on a refused key).
        Raises ``TimeoutError`` when it did not finish within ``timeout``.
        """
        with self._cond:
            if first:
                target = 1
            else:
                target = self._passes_started + 1  # one in flight started before the request: not it
                self._sched.run_now(LISTS)
                self._sched.run_now(RESCAN)
                self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._passes_done >= target or self._stopping.is_set(), timeout):
                raise TimeoutError("the pass did not finish in time")
            return self._pass_error

    @property
    def last_contact(self) -> float | None:
        """Wall time of the server's last answer to this engine (``convsync.heartbeat``)."""
        return self._client.last_response

    def healthy(self) -> bool:
        if not self._started or self._stopping.is_set():
            return False
        if not all(t.is_alive() for t in self._threads):
            return False
        return time.monotonic() - self._heartbeat < HEALTH_STALL_SECONDS

    # --- threads --------------------------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name)
        self._threads.append(thread)
        thread.start()

    def _close_clients(self) -> None:
        clients = [*self._retired, self._client] if self._owns_client else list(self._retired)
        self._retired.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._cond:
                self._heartbeat = now
                self._timers(now)  # (lock held)
                wake = self._sched.dispatch(now)
                self._cond.wait(max(0.005, min(SCHEDULER_TICK, wake - now)))

    def _timers(self, now: float) -> None:
        """Turn due timers into jobs (called with the lock held)."""
        config = self._config
        if now >= self._next_lists:
            self._sched.due_at(LISTS, now, self._polls.lists_lane())
            self._next_lists = now + self._polls.lists_interval(config)
        if now >= self._next_rescan:
            self._sched.due_at(RESCAN, now, Lane.BACKGROUND)
            self._next_rescan = now + config.rescan_seconds
        due = self._sched.due_timers(now)
        for job, lane in timer_jobs(due, now, runtime=self._runtimes.peek, polls=self._polls, busy=self._sched.busy):
            self._sched.due_at(job, now, lane)

    def _worker_loop(self) -> None:
        while (taken := self._sched.take(self._stopping.is_set)) is not None:
            job, lane = taken
            try:
                with request_lane(partial(self._sched.lane_of, job)):  # raised if a person comes to wait
                    self._run_job(job, lane)
            except Exception as exc:
                log.exception("job %s failed", job)
                self._problems.set("bug", f"internal error (a bug, please report it): {type(exc).__name__}: {exc}")
            finally:
                self._sched.done(job)

    def _claim(self, job: Job, *, wait: bool) -> bool:
        return self._sched.claim(job, wait=wait, stopping=self._stopping.is_set)

    def _run_job(self, job: Job, lane: Lane) -> None:
        try:
            check_root(self._config.root)
        except RootUnavailable as exc:
            if self._problems.get("root") != str(exc):
                log.error("%s", exc)
            self._problems.set("root", str(exc))
            if not self._ready.is_set() and isinstance(job, ListsJob):
                self._ready.set()  # READY, with the problem in the status: nothing else to wait for
            return
        if "root" in self._problems:
            log.info("the mirror root is back; resuming")
            self._problems.set("root", None)
            self._sched.schedule(LISTS)
            self._sched.schedule(RESCAN)
        if isinstance(job, ListsJob):
            if self._lists_pass() is not None:
                self._lists.local(schedule=True)
            # The folders exist: the watcher starts now, so a prompt saved during a first mirror goes out at once
            # (the request budget, not watchdog's CPU, sets how long a first mirror takes).
            if self._watch.start_once(self._config.root, self._config.rescan_seconds, self._stopping.is_set):
                # What changed before the watcher was up (a mkdir, a save) is found by a look at the disk, at
                # every folder: one looked at while unwatched may have changed during that look, after the part
                # it concerned (a save while the transcript was fetched), and its fingerprint would hide it.
                with self._cond:
                    for rt in self._runtimes.all():
                        rt.seen = None
                self._sched.schedule(RESCAN)
            if not self._ready.is_set():
                self._lists.first_look(self._ready.set)
        elif isinstance(job, RescanJob):
            self._lists.local(schedule=True)
        elif isinstance(job, AgentJob):
            agent = next((a for a in self._configured_agents() if a.id == job.agent_id), None)
            if agent is not None:  # the job holds its key: no other pass plans this agent meanwhile
                self._lists.plan(agent, None)
        else:
            ident = job.conversation_id
            rt = self._runtime(ident)
            flags = rt.pop()
            # Files and frames are listed in the background lane: a first look or a reply leaves them to a
            # background job (scheduled by _after_conversation), so transcripts come first.
            flags.defer_files = lane is not Lane.BACKGROUND
            outcome = self._run_conversation(ident, flags)
            self._after_conversation(ident, outcome, lane)

    def _after_conversation(self, cid: str, outcome: Outcome | None, lane: Lane) -> None:
        if outcome is None:
            return
        if outcome.gone:
            row = self._state.conversation(cid)
            if row is not None:
                self._sched.schedule(AgentJob(row.agent_id))
            self._sched.schedule(LISTS, 0.5)
        self._problems.conversation_failed(outcome.transient, outcome.auth)
        rt = self._runtimes.peek(cid)
        with self._cond:
            if rt is not None and rt.recheck_at is not None:
                self._sched.add_timer(Timer(rt.recheck_at, TimerKind.RECHECK, cid))
            if rt is not None and rt.retry_at:
                self._sched.add_timer(Timer(rt.retry_at, TimerKind.RETRY, cid))
            if rt is not None and rt.fetched[1]:
                self._sched.add_timer(Timer(rt.fetched[0] + PRE_SEND_FRESH_SECONDS, TimerKind.FORGET, cid))
            if rt is not None and rt.files_due and lane is not Lane.BACKGROUND:  # left to the background lane
                self._sched.due_at(ConversationJob(cid), time.monotonic(), Lane.BACKGROUND)
            if outcome.sent or (rt is not None and rt.active):
                self._polls.active_now(cid, time.monotonic())
            self._cond.notify_all()

    # --- the lists pass: agents and conversations against the server ----------------------------------------

    def _lists_pass(self) -> ApiError | None:
        """Resolve agents and plan each against its conversation list; returns the server's error, if any."""
        with self._cond:
            self._passes_started += 1
            number = self._passes_started
        error = self._lists.run()
        if error is None:
            self._update_intervals()
        with self._cond:
            self._passes_done, self._pass_error = number, error
            self._cond.notify_all()
        return error

    # --- what an agent pass needs (AgentHost) ---------------------------------------------------------------

    def built(self, cid: str, path: Path) -> None:
        rt = self._runtime(cid)  # its status file says "idle"; no temp files to clean up in it
        rt.temps_cleaned = True
        rt.reporter = Reporter(self._state, cid, path, recorded=("idle", None), status="idle")

    def building(self, key: tuple[str, str], on: bool) -> None:
        with self._cond:
            (self._building.add if on else self._building.discard)(key)

    def later(self, agent_id: str, delay: float) -> None:
        self._sched.schedule(AgentJob(agent_id), delay)

    def claim(self, cid: str) -> bool:
        return self._claim(ConversationJob(cid), wait=False)

    def release(self, cid: str) -> None:
        self._sched.done(ConversationJob(cid))

    def problem(self, source: str, text: str | None) -> None:
        self._problems.set(source, text)

    def bound(self, cid: str, agent_folder: str, folder: str, *, new: bool, lane: Lane = Lane.INTERACTIVE) -> None:
        rt = self._runtime(cid)
        flags = Flags(local=True, poll=new)
        key = (agent_folder, folder)
        with self._cond:
            if key in self._orphan_signals:
                self._orphan_signals.discard(key)
                flags.prompt_signal_ns = time.time_ns()
            self._selection.folders[key] = cid
        rt.add(flags)
        self._sched.schedule(ConversationJob(cid), lane=lane)

    # --- one conversation -----------------------------------------------------------------------------------

    def _runtime(self, cid: str) -> ConversationRuntime:
        return self._runtimes.get(cid)

    def _run_conversation(self, cid: str, flags: Flags) -> Outcome | None:
        row = self._state.conversation(cid)
        agent = next((a for a in self._configured_agents() if row and a.id == row.agent_id), None)
        if row is None or row.status != "active" or agent is None:
            with self._cond:
                self._polls.forget(cid)  # detached, deleted, or its agent no longer mirrored
            return None
        rt = self._runtime(cid)  # its job's key (or ``run_once``, alone) keeps everyone else out
        return Reconcile(self._context(row, agent, rt), rt, flags).run()

    def _context(self, row: ConversationRow, agent: AgentRow, rt: ConversationRuntime) -> ConversationContext:
        folder = self._config.root / agent.folder / row.folder
        if rt.reporter is None or rt.reporter.folder != folder:
            rt.reporter = Reporter(self._state, row.id, folder, recorded=(row.activity, row.last_error))
        return ConversationContext(
            root=self._config.root,
            agent_id=agent.id,
            conversation_id=row.id,
            folder=folder,
            client=self._client,
            state=self._state,
            report=rt.reporter,
            clock=self._clock,
            traits=self._traits,
            stopping=self._stopping.is_set,
            replan=lambda: self._sched.schedule(LISTS),
            frame_formats=self._config.frame_formats,
            on_reply=partial(hooks.run_on_reply, self._config.on_reply, secret=self._config.api_key)
            if self._config.on_reply
            else None,
        )

    # --- hints ----------------------------------------------------------------------------------------------

    def _on_hint(self, hint: Hint) -> None:
        """Called from the watcher's thread: route a path to its job and schedule it, debounced."""
        with self._cond:  # atomic with _bound: a save in a folder being bound is never lost
            where = route(
                hint,
                self._config.root,
                agents=self._selection.agent_folders,
                conversation_of=self._selection.folders.get,
                building=self._building.__contains__,
            )
            if where.orphan is not None:
                self._orphan_signals.add(where.orphan)
        debounce = self._config.debounce_ms / 1000.0
        for job in where.jobs:
            self._sched.schedule(job, debounce, debounce=True)
        if where.conversation is not None:
            flags = Flags(local=True, prompt_signal_ns=time.time_ns() if where.prompt_saved else 0)
            if where.inbox_name is not None:
                flags.inbox_hints.add(where.inbox_name)
            self._runtime(where.conversation).add(flags)
            self._sched.schedule(ConversationJob(where.conversation), debounce, debounce=True)

    # --- bookkeeping ----------------------------------------------------------------------------------------

    def _bind_root(self) -> None:
        """Bindings belong to one root: a different root starts from scratch (the old one is left alone)."""
        root = str(self._config.root.resolve())
        recorded = self._state.get_meta("root")
        if recorded is not None and recorded != root:
            log.warning("the mirror root changed from %s to %s: mirroring everything anew", recorded, root)
            self._state.reset_bindings()
        if recorded != root:
            self._state.set_meta("root", root)

    def _update_intervals(self) -> None:
        with self._cond:  # the index holds exactly the active conversations of the configured agents
            cids = list(self._selection.folders.values())
        n_active = sum(1 for cid in cids if (rt := self._runtimes.peek(cid)) is not None and rt.active)
        self._polls.update(
            self._config, n_active=n_active, n_idle=len(cids) - n_active, n_agents=len(self._selection.agent_folders)
        )

    def _rebuild_index(self) -> None:
        self._selection.rebuild(self._config.agents, self._config.root)

    def _configured_agents(self) -> list[AgentRow]:
        """The bound agents the configuration still selects (an agent dropped from ``agents:`` is left alone)."""
        return self._selection.agents(self._config.agents)

    def _active_conversations(self) -> list[ConversationRow]:
        return self._selection.conversations(self._config.agents)
