"""The sync engine: agents and conversations on the server ↔ folders under the root.

It composes the parts and runs the threads (all owned, all joined by ``stop``)::

    watcher     watchdog observer → ``events``: a path becomes a job (``routing``), debounced
                (``debounce_ms``); started once the first lists pass has built the folders (``watchstart``),
                then a rescan covers what it could not see
    scheduler   timers → jobs (``timers``): the conversation lists (``poll_conversations_seconds``), the local
                rescan (``rescan_seconds``), message polls (``pollpolicy``), rechecks and retries
    workers     a small pool running jobs; a job key is never run by two workers at once, so one conversation
                is handled by one thread at a time and its prompts go out in order

Jobs (``scheduler``, each in a lane of the request budget): ``ListsJob`` resolves agents and plans every
agent against the server's conversation lists, ``RescanJob`` plans every agent against the disk only and
looks at every changed conversation folder (both ``listspass``); ``AgentJob`` plans one agent against the
disk (``agentpass``, through ``agenthost``); ``ConversationJob`` reconciles one conversation (``runner``,
then ``followups``). Which agents and conversations are mirrored, and the folder indexes, are ``selection``'s;
the runtimes ``runtimes``'; the problems shown in ``STATUS=`` ``problems``'; the API client ``clients``'.
No part imports this module: each is handed what it needs (``docs/architecture.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from convsync import paths
from convsync.api.client import AgentClient
from convsync.api.ratelimit import Lane, request_lane
from convsync.config import Config
from convsync.errors import ApiError, RootUnavailable
from convsync.mirror.agenthost import PartsHost
from convsync.mirror.agentpass import AgentPass
from convsync.mirror.clients import Clients, build_client
from convsync.mirror.context import ServerTraits
from convsync.mirror.conversation import Flags
from convsync.mirror.events import FileEvents
from convsync.mirror.folders import check_root
from convsync.mirror.followups import Followups
from convsync.mirror.listspass import ListsPass
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.problems import Problems
from convsync.mirror.report import Summary, SyncReport
from convsync.mirror.runner import ConversationRunner
from convsync.mirror.runtimes import Runtimes
from convsync.mirror.scheduler import (
    LISTS,
    RESCAN,
    AgentJob,
    Job,
    ListsJob,
    RescanJob,
    Scheduler,
    TimerKind,
)
from convsync.mirror.selection import Selection, bind_root
from convsync.mirror.state import DB_NAME, AgentRow, ConversationRow, State
from convsync.mirror.timers import timer_jobs
from convsync.mirror.watchstart import WatcherStartup

__all__ = ["WORKERS", "Engine", "Summary", "SyncReport", "build_client", "state_path"]

log = logging.getLogger(__name__)

WORKERS = 5  # one of them takes interactive jobs only, so a prompt never waits for a worker
HEALTH_STALL_SECONDS = 60.0
SCHEDULER_TICK = 1.0  # the scheduler wakes at least this often (timers wake it earlier)


def state_path(config: Config) -> Path:
    """The state database of ``config``: in ``state_dir``, else the user state dir."""
    return paths.state_dir(config.state_dir) / DB_NAME


class Engine:
    def __init__(self, config: Config, *, client: AgentClient | None = None) -> None:
        self._config = config
        self._clients = Clients(config, client)
        self._state = State(state_path(config))
        self._traits = ServerTraits()  # what was learnt about the server: its Parquet support, its change hints
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
        self._events = FileEvents(
            lock=self._cond,
            sched=self._sched,
            selection=self._selection,
            runtimes=self._runtimes,
            root=lambda: self._config.root,
            debounce=lambda: self._config.debounce_ms / 1000.0,
        )
        self._watch = WatcherStartup(self._events.on_hint, self._problems.set)
        self._followups = Followups(state=self._state, sched=self._sched, polls=self._polls, problems=self._problems)
        self._heartbeat = time.monotonic()
        self._started = False
        host = PartsHost(
            state=self._state,
            sched=self._sched,
            runtimes=self._runtimes,
            events=self._events,
            problems=self._problems,
            stopping=self._stopping.is_set,
        )
        self._agents = AgentPass(self._state, lambda: self._clients.current, host)
        self._lists = ListsPass(
            config=lambda: self._config,
            client=lambda: self._clients.current,
            state=self._state,
            sched=self._sched,
            lock=self._cond,
            agents=self._agents,
            selection=self._selection,
            runtimes=self._runtimes,
            problems=self._problems,
            hints=self._traits.hints,
            stopping=self._stopping.is_set,
            answered=self._update_intervals,
        )
        self._runner = ConversationRunner(
            config=lambda: self._config,
            client=lambda: self._clients.current,
            state=self._state,
            lock=self._cond,
            selection=self._selection,
            runtimes=self._runtimes,
            polls=self._polls,
            traits=self._traits,
            stopping=self._stopping.is_set,
            replan=lambda: self._sched.schedule(LISTS),
        )
        bind_root(self._state, config.root)
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
            self._clients.close()
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.error("threads did not stop in time: %s", ", ".join(stuck))
        self._threads = [t for t in self._threads if t.is_alive()]
        self._clients.close()
        if not self._threads:
            self._state.close()

    def reload(self, config: Config) -> None:
        """Apply a new configuration; queued work (in the state database) is kept."""
        old = self._config
        self._clients.reload(old, config)  # outside the lock: workers pick the client up without it anyway
        with self._cond:
            self._config = config
            self._sched.due_at(LISTS, time.monotonic(), Lane.INTERACTIVE)
            self._next_rescan = time.monotonic()
            self._cond.notify_all()
        if config.root != old.root and self._started:
            bind_root(self._state, config.root)
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
        with self._cond:
            self._next_lists = now + self._polls.lists_interval(self._config)
            self._polls.respread(now, self._runtimes.poll_window)
            # Entries superseded above are skipped when they surface; drop them now so the heap stays small.
            self._sched.drop_timers(lambda t: t.kind is not TimerKind.POLL or self._polls.current(t))
            self._cond.notify_all()

    def run_once(self) -> SyncReport:
        """One full blocking pass (``convsync sync``): lists, folders, prompts, outbox, messages, files.

        Local work (taking prompts into the outbox) happens even when the server fails; the server's error is
        raised at the end (``TransientError`` → exit 75, ``AuthError`` → exit 77).
        """
        check_root(self._config.root)
        failure = self._lists.run()
        if failure is not None:
            self._lists.local()
        errors: list[str] = [str(failure)] if failure is not None else []
        cids = [c.id for c in self._active_conversations()]
        for cid in cids:
            outcome = self._runner.run(cid, Flags(local=True, poll=True, full=True))
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
            target = 1 if first else self._lists.started + 1  # one in flight started before the request: not it
            if not first:
                self._sched.run_now(LISTS)
                self._sched.run_now(RESCAN)
                self._cond.notify_all()
            return self._lists.wait(target, timeout)

    @property
    def last_contact(self) -> float | None:
        """Wall time of the server's last answer to this engine (``convsync.heartbeat``)."""
        return self._clients.current.last_response

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
            if self._lists.run() is not None:
                self._lists.local(schedule=True)
            # The folders exist: the watcher starts now, so a prompt saved during a first mirror goes out at once
            # (the request budget, not watchdog's CPU, sets how long a first mirror takes).
            if self._watch.start_once(self._config.root, self._config.rescan_seconds, self._stopping.is_set):
                # What changed before the watcher was up (a mkdir, a save) is found by a look at the disk, at
                # every folder: one looked at while unwatched may have changed during that look, after the part
                # it concerned (a save while the transcript was fetched), and its fingerprint would hide it.
                self._runtimes.forget_seen()
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
            flags = self._runtimes.get(ident).pop()
            # Files and frames are listed in the background lane: a first look or a reply leaves them to a
            # background job (scheduled by _after_conversation), so transcripts come first.
            flags.defer_files = lane is not Lane.BACKGROUND
            outcome = self._runner.run(ident, flags)
            self._followups.after(ident, outcome, self._runtimes.peek(ident), lane)

    # --- bookkeeping ----------------------------------------------------------------------------------------

    def _update_intervals(self) -> None:
        with self._cond:  # the index holds exactly the active conversations of the configured agents
            cids = list(self._selection.folders.values())
        n_active = self._runtimes.count_active(cids)
        self._polls.update(
            self._config, n_active=n_active, n_idle=len(cids) - n_active, n_agents=len(self._selection.agent_folders)
        )

    def _rebuild_index(self) -> None:
        self._selection.rebuild(self._config.agents, self._config.root)

    def _configured_agents(self) -> list[AgentRow]:
        return self._selection.agents(self._config.agents)

    def _active_conversations(self) -> list[ConversationRow]:
        return self._selection.conversations(self._config.agents)
