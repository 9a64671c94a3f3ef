"""The sync engine: agents and conversations on the server ↔ folders under the root.

Threads (all owned, all joined by ``stop``)::

    watcher     watchdog observer → ``_on_hint``: a path becomes a job key, debounced (``debounce_ms``); started
                once the first lists pass has built the folders, then a rescan covers what it could not see
    scheduler   timers → jobs: the conversation lists (``poll_conversations_seconds``), the local rescan
                (``rescan_seconds``), message polls (fast for active conversations, slow for idle ones,
                stretched to fit the rate budget), retries after failures
    workers     a small pool running jobs; a job key is never run by two workers at once, so one conversation
                is handled by one thread at a time and its prompts go out in order

Jobs (``convsync.mirror.scheduler``, each in a lane of the request budget): ``ListsJob`` resolves agents and
plans every agent against the server's conversation lists; ``RescanJob`` plans every agent against the disk
only and looks at every conversation folder; ``AgentJob`` plans one agent against the disk;
``ConversationJob`` reconciles one conversation (``convsync.mirror.conversation``). File events become jobs
in ``convsync.mirror.routing``. Planning is pure (``convsync.mirror.plan``); this module carries it out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from convsync import hooks, paths
from convsync.api.client import AgentClient
from convsync.api.models import Conversation
from convsync.api.ratelimit import Lane, request_lane
from convsync.config import Config
from convsync.errors import ApiError, AuthError, RootUnavailable, TransientError
from convsync.mirror.agentpass import AgentPass
from convsync.mirror.context import ConversationContext, Reporter, ServerClock, ServerTraits, without_ids
from convsync.mirror.conversation import (
    PRE_SEND_FRESH_SECONDS,
    ConversationRuntime,
    Flags,
    Outcome,
    Reconcile,
)
from convsync.mirror.folders import (
    check_root,
    folder_fingerprint,
)
from convsync.mirror.pollpolicy import PollPolicy
from convsync.mirror.routing import route
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
from convsync.mirror.state import DB_NAME, AgentRow, ConversationRow, State
from convsync.watch import Hint, Watcher

log = logging.getLogger(__name__)

WORKERS = 5  # one of them takes interactive jobs only, so a prompt never waits for a worker
HEALTH_STALL_SECONDS = 60.0
SCHEDULER_TICK = 1.0  # the scheduler wakes at least this often (timers wake it earlier)


@dataclass(frozen=True, slots=True)
class Summary:
    """A snapshot for ``STATUS=`` and the log."""

    conversations: int
    queued_prompts: int
    queued_uploads: int
    last_error: str | None

    def __str__(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        text = (
            f"{plural(self.conversations, 'conversation')}, {plural(self.queued_prompts, 'prompt')} and "
            f"{plural(self.queued_uploads, 'upload')} queued"
        )
        return f"{text}; last error: {self.last_error}" if self.last_error else text


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one ``run_once`` pass did."""

    agents: int
    conversations: int
    queued_prompts: int
    queued_uploads: int
    errors: tuple[str, ...]

    def __str__(self) -> str:
        text = (
            f"{self.agents} agent(s), {self.conversations} conversation(s); "
            f"{self.queued_prompts} prompt(s) and {self.queued_uploads} upload(s) still queued"
        )
        return text + (f"; {len(self.errors)} problem(s): {self.errors[0]}" if self.errors else "")


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
        self._watcher: Watcher | None = None
        self._watch_lock = threading.Lock()  # the lists job and the watch job may both start the watcher
        self._runtimes: dict[str, ConversationRuntime] = {}
        self._next_lists = 0.0
        self._next_rescan = 0.0
        self._polls = PollPolicy(config, self._sched.add_timer, hints=self._traits.hints)
        self._folder_index: dict[tuple[str, str], str] = {}  # (agent folder, conversation folder) → id
        self._agent_index: dict[str, str] = {}  # agent folder → agent id
        self._agents_cache: tuple[tuple[object, ...], list[AgentRow]] | None = None
        self._index_key: tuple[object, ...] | None = None  # (bindings version, selectors, root) of the index
        self._orphan_signals: set[tuple[str, str]] = set()  # prompt saves in folders not bound yet
        self._building: set[tuple[str, str]] = set()  # (agent folder, folder) built but not bound yet
        self._problems: dict[str, str] = {}  # source ("server", "root", "watch", …) → problem, for summary()
        self._server_trouble = False
        # Lists passes started and finished, and the last one's server error: what full_pass() waits for.
        self._lists_logged: str | None = None  # the lists pass's problem as last logged
        self._passes_started = 0
        self._passes_done = 0
        self._pass_error: ApiError | None = None
        self._heartbeat = time.monotonic()
        self._started = False
        self._agents = AgentPass(self._state, lambda: self._client, self)
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
        return self._watcher is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every thread; a reply being streamed is abandoned (it is read from the server next time)."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            self._sched.work.notify_all()
        with self._watch_lock:
            if self._watcher is not None:
                self._watcher.stop(timeout=timeout / 4)
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
            with self._watch_lock:
                if self._watcher is not None:  # else the first lists pass (or the watch job) starts it
                    self._watcher.stop()
                    self._start_watcher()
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
            rt = self._runtimes.get(cid)
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
            self._local_pass()
        errors: list[str] = [str(failure)] if failure is not None else []
        cids = [c.id for c in self._active_conversations()]
        for cid in cids:
            outcome = self._run_conversation(cid, Flags(local=True, poll=True, full=True))
            if failure is None and outcome is not None:
                failure = outcome.auth or outcome.transient
            rt = self._runtimes.get(cid)
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
        problem = self._problems.get("root") or next(iter(self._problems.values()), None)
        return Summary(n, counts.prompts, counts.uploads, problem)

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

    def _start_watcher(self) -> None:
        watcher = Watcher(self._config.root, self._on_hint, rescan_seconds=self._config.rescan_seconds)
        try:
            problem = watcher.start()
        except OSError as exc:
            problem = f"convsync cannot watch {self._config.root} ({exc}); changes are found by the rescan only"
        if problem:
            log.warning("%s", problem)
        self._problem("watch", problem)
        self._watcher = watcher

    def _problem(self, source: str, text: str | None) -> None:
        if text is None:
            self._problems.pop(source, None)
        else:
            self._problems[source] = text

    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._cond:
                self._heartbeat = now
                self._timers(now)
                wake = self._sched.dispatch(now)
                self._cond.wait(max(0.005, min(SCHEDULER_TICK, wake - now)))

    def _timers(self, now: float) -> None:
        """Turn due timers into jobs (called with the lock held)."""
        config = self._config
        if now >= self._next_lists:
            self._sched.due_at(LISTS, now, Lane.BACKGROUND)
            self._next_lists = now + self._polls.lists_interval(config)
        if now >= self._next_rescan:
            self._sched.due_at(RESCAN, now, Lane.BACKGROUND)
            self._next_rescan = now + config.rescan_seconds
        for timer in self._sched.due_timers(now):
            at, kind, cid = timer.at, timer.kind, timer.conversation_id
            rt = self._runtimes.get(cid)
            if rt is None:
                continue
            lane = Lane.INTERACTIVE  # a prompt or a file settling, a retry of queued work
            if kind is TimerKind.POLL:
                lane = Lane.BACKGROUND
                if not self._polls.fired(timer, now, active=rt.active, read_at=rt.fetched[0]):
                    continue
                rt.add(Flags(poll=True))
            elif kind is TimerKind.RECHECK:
                if rt.recheck_at != at:
                    continue
                rt.recheck_at = None
                rt.add(Flags(local=True))
            elif kind is TimerKind.RETRY:
                if rt.retry_at != at:
                    continue
                rt.retry_at = 0.0
                rt.add(Flags(local=True))
            elif kind is TimerKind.FORGET:
                # Messages read are kept only while they may serve as a send's baseline: a thousand idle
                # conversations' messages would otherwise stay in memory (and in every GC pass) for good.
                if not self._sched.busy(ConversationJob(cid)):  # else a reconcile runs: it will time a new "forget"
                    read_at, messages = rt.fetched
                    if messages and read_at + PRE_SEND_FRESH_SECONDS == at:
                        rt.fetched = (read_at, [])
                continue
            self._sched.due_at(ConversationJob(cid), now, lane)

    def _worker_loop(self) -> None:
        while (taken := self._sched.take(self._stopping.is_set)) is not None:
            job, lane = taken
            try:
                with request_lane(partial(self._sched.lane_of, job)):  # raised if a person comes to wait
                    self._run_job(job, lane)
            except Exception as exc:
                log.exception("job %s failed", job)
                self._problem("bug", f"internal error (a bug, please report it): {type(exc).__name__}: {exc}")
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
            self._problem("root", str(exc))
            if not self._ready.is_set() and isinstance(job, ListsJob):
                self._ready.set()  # READY, with the problem in the status: nothing else to wait for
            return
        if "root" in self._problems:
            log.info("the mirror root is back; resuming")
            self._problem("root", None)
            self._sched.schedule(LISTS)
            self._sched.schedule(RESCAN)
        if isinstance(job, ListsJob):
            if self._lists_pass() is not None:
                self._local_pass(schedule=True)
            # The folders exist: the watcher starts now, so a prompt saved during a first mirror goes out at once
            # (the request budget, not watchdog's CPU, sets how long a first mirror takes).
            if self._watcher is None:
                self._start_watching()
            self._after_first_scan()
        elif isinstance(job, RescanJob):
            self._local_pass(schedule=True)
        elif isinstance(job, AgentJob):
            agent = next((a for a in self._configured_agents() if a.id == job.agent_id), None)
            if agent is not None:  # the job holds its key: no other pass plans this agent meanwhile
                self._agent_pass(agent, None)
        else:
            ident = job.conversation_id
            rt = self._runtime(ident)
            flags = rt.pop()
            # Files and frames are listed in the background lane: a first look or a reply leaves them to a
            # background job (scheduled by _after_conversation), so transcripts come first.
            flags.defer_files = lane is not Lane.BACKGROUND
            outcome = self._run_conversation(ident, flags)
            self._after_conversation(ident, outcome, lane)

    def _start_watching(self) -> None:
        with self._watch_lock:
            if self._watcher is not None or self._stopping.is_set():
                return
            self._start_watcher()
        # What changed before the watcher was up (a mkdir, a save) is found by a look at the disk, at every
        # folder: one looked at while unwatched may have changed during that look, after the part it concerned
        # (a save while the transcript was fetched), and its fingerprint, taken at the end, would hide it.
        with self._cond:
            for rt in self._runtimes.values():
                rt.seen = None
        self._sched.schedule(RESCAN)

    def _after_first_scan(self) -> None:
        if self._ready.is_set():
            return
        now = time.monotonic()
        pending = set(self._state.conversations_with_pending())
        with self._cond:
            for row in self._active_conversations():
                rt = self._runtime(row.id)
                rt.add(Flags(local=True))
                self._sched.due_at(
                    ConversationJob(row.id), now, Lane.INTERACTIVE if row.id in pending else Lane.BACKGROUND
                )
                if row.id in pending:
                    rt.touch()
            self._ready.set()
        self._sched.open_background()

    def _after_conversation(self, cid: str, outcome: Outcome | None, lane: Lane) -> None:
        if outcome is None:
            return
        if outcome.gone:
            row = self._state.conversation(cid)
            if row is not None:
                self._sched.schedule(AgentJob(row.agent_id))
            self._sched.schedule(LISTS, 0.5)
        if outcome.transient is not None:
            if not self._server_trouble:
                log.warning("the server is unreachable or failing: %s", without_ids(str(outcome.transient)))
            self._server_trouble = True
            self._problem("server", f"the server cannot be reached or failed: {without_ids(str(outcome.transient))}")
        if outcome.auth is not None:
            self._problem("server", f"the server refused the API key: {outcome.auth}")
        rt = self._runtimes.get(cid)
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
        error = self._lists_pass_body()
        with self._cond:
            self._passes_done, self._pass_error = number, error
            self._cond.notify_all()
        return error

    def _lists_pass_body(self) -> ApiError | None:
        try:
            agents = self._agents.resolve(self._config.agents, self._config.root)
            self._rebuild_index()
            for agent in agents:
                # The agent's key is held from the listing on: it must not be older than the bindings it is
                # planned with (a folder made meanwhile, created on the server, would read as deleted there).
                key = AgentJob(agent.id)
                if not self._claim(key, wait=True):
                    break  # stopping
                try:
                    remote = self._client.list_conversations(agent.id)
                    for cid in self._traits.hints.listed(remote):  # its list says it changed: read it now
                        self._runtime(cid).add(Flags(poll=True))
                        self._sched.schedule(ConversationJob(cid), lane=Lane.FIRST_LOOK)
                    self._state.refresh_names(agent.id, {c.id: c.name for c in remote})  # for convsync status
                    self._agent_pass(agent, remote)
                finally:
                    self._sched.done(key)
        except ApiError as exc:
            if isinstance(exc, AuthError):
                message = f"the server refused the API key: {exc}"
            elif isinstance(exc, TransientError):
                message = f"the server cannot be reached or failed: {exc}"
            else:
                message = f"listing agents and conversations failed: {exc}"
            # Once per distinct problem: the conversations' own server problems share "server" in _problems,
            # so comparing with that made this line come back on every lists pass of an outage.
            if self._lists_logged != message:
                log.warning("%s", message)
                self._lists_logged = message
            self._problem("server", message)
            self._server_trouble = True
            return exc
        self._problem("server", None)
        self._lists_logged = None
        if self._server_trouble:
            log.info("the server answers again")
            self._server_trouble = False
            self._wake_pending()
        self._update_intervals()
        return None

    def _wake_pending(self) -> None:
        now = time.monotonic()
        with self._cond:
            for cid in self._state.conversations_with_pending():
                rt = self._runtime(cid)
                rt.retry_at = 0.0
                rt.backoff.succeeded()
                rt.add(Flags(local=True))
                self._sched.due_at(ConversationJob(cid), now, Lane.INTERACTIVE)
            self._cond.notify_all()

    def _configured_agents(self) -> list[AgentRow]:
        """The bound agents the configuration still selects (an agent dropped from ``agents:`` is left alone).

        Every job asks; the answer is kept until a binding or the configuration changes. Callers must not
        modify the list."""
        selectors = self._config.agents
        key = (self._state.bindings_version, selectors)  # the version first: a write in between only rebuilds
        cached = self._agents_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = [
            a
            for a in self._state.agents()
            if not selectors
            or any(
                (sel.id is not None and sel.id == a.id)
                or (sel.name is not None and sel.name.casefold() == a.name.casefold())
                for sel in selectors
            )
        ]
        self._agents_cache = (key, rows)
        return rows

    def _active_conversations(self) -> list[ConversationRow]:
        agents = {a.id for a in self._configured_agents()}
        return [c for c in self._state.conversations(status="active") if c.agent_id in agents]

    def _local_pass(self, *, schedule: bool = False) -> None:
        """Plan every agent against the disk only, and look at every conversation folder."""
        for agent in self._configured_agents():
            if (self._config.root / agent.folder).is_dir() or agent.id in self._agents.vanished:
                key = AgentJob(agent.id)
                if not self._claim(key, wait=True):
                    return  # stopping
                try:
                    self._agent_pass(agent, None)
                finally:
                    self._sched.done(key)
        if schedule:
            folders = {a.id: a.folder for a in self._configured_agents()}
            pending = set(self._state.conversations_with_pending())
            root = self._config.root
            for row in self._active_conversations():
                rt = self._runtime(row.id)
                # Only folders that changed since the last look (or with queued work) need one.
                if row.id in pending:
                    rt.add(Flags(local=True))
                    self._sched.schedule(ConversationJob(row.id))
                elif rt.seen != folder_fingerprint(root / folders[row.agent_id] / row.folder):
                    rt.add(Flags(local=True))  # a send it finds goes out in the interactive lane all the same
                    self._sched.schedule(ConversationJob(row.id), lane=Lane.BACKGROUND)

    # --- one agent ------------------------------------------------------------------------------------------

    def _agent_pass(self, agent: AgentRow, remote: list[Conversation] | None) -> None:
        if self._agents.run(agent, remote, root=self._config.root, policy=self._config.on_local_delete):
            self._rebuild_index()

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
        self._problem(source, text)

    def bound(self, cid: str, agent_folder: str, folder: str, *, new: bool, lane: Lane = Lane.INTERACTIVE) -> None:
        rt = self._runtime(cid)
        flags = Flags(local=True, poll=new)
        key = (agent_folder, folder)
        with self._cond:
            if key in self._orphan_signals:
                self._orphan_signals.discard(key)
                flags.prompt_signal_ns = time.time_ns()
            self._folder_index[key] = cid
        rt.add(flags)
        self._sched.schedule(ConversationJob(cid), lane=lane)

    # --- one conversation -----------------------------------------------------------------------------------

    def _runtime(self, cid: str) -> ConversationRuntime:
        with self._cond:  # the scheduler iterates these dicts
            rt = self._runtimes.get(cid)
            if rt is None:
                rt = self._runtimes[cid] = ConversationRuntime(cid)
            self._polls.first(cid, time.monotonic())
            return rt

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
                agents=self._agent_index,
                conversation_of=self._folder_index.get,
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

    def _rebuild_index(self) -> None:
        # Every lists pass asks for this; when no binding changed (the idle case) the index is still right.
        # The version is read before the rows: a write in between only makes the next call rebuild again.
        key = (self._state.bindings_version, self._config.agents, self._config.root)
        if key == self._index_key:
            return
        agents = {a.id: a.folder for a in self._configured_agents()}
        index = {(agents[c.agent_id], c.folder): c.id for c in self._active_conversations()}
        with self._cond:
            self._agent_index = {folder: aid for aid, folder in agents.items()}
            self._folder_index = index
            self._index_key = key

    def _update_intervals(self) -> None:
        with self._cond:  # the index holds exactly the active conversations of the configured agents
            cids = list(self._folder_index.values())
        n_active = sum(1 for cid in cids if (rt := self._runtimes.get(cid)) is not None and rt.active)
        self._polls.update(
            self._config, n_active=n_active, n_idle=len(cids) - n_active, n_agents=len(self._agent_index)
        )
