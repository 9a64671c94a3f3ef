"""The engine's jobs and timers, and the scheduler that turns them into work for the worker threads.

Jobs are typed values (``ListsJob``, ``RescanJob``, ``AgentJob``, ``ConversationJob``); each runs in a lane of
the request budget (``convsync.api.ratelimit.Lane``): its most urgent reason. The scheduler keeps

- *due* jobs: a time each (``schedule``; debounced ones move back with every hint, at most ``DEBOUNCE_CAP``
  debounce periods after the first), dispatched into one queue per lane when their time comes;
- *timers* (``Timer``: a poll, a recheck, a retry, dropping kept messages) in a heap, handed to the engine
  when due (``due_timers``), which turns them into jobs (``convsync.mirror.timers``);
- the *busy* set: a job is never run twice at once, and work outside a job (a pass over every agent, a
  folder moved aside) takes a job's key the same way (``claim``): this rule is the engine's only exclusion,
  and no lock is held across a request.

The last idle worker takes interactive jobs only, so a prompt never waits for a worker; background jobs wait
until ``open_background`` (the end of the first lists pass). Everything here runs under one lock, never
across I/O; ``clock`` is injectable, and every method but the waits works without threads.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from convsync.api.ratelimit import Lane

DEBOUNCE_CAP = 5  # a burst of events delays a job by at most this many debounce periods
TICK = 1.0  # waits wake at least this often


@dataclass(frozen=True, slots=True)
class ListsJob:
    """Resolve the agents and plan each against the server's conversation list."""


@dataclass(frozen=True, slots=True)
class RescanJob:
    """Plan every agent against the disk and look at every changed conversation folder."""


@dataclass(frozen=True, slots=True)
class AgentJob:
    """Plan one agent against the disk."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class ConversationJob:
    """Reconcile one conversation (``convsync.mirror.conversation``)."""

    conversation_id: str


Job = ListsJob | RescanJob | AgentJob | ConversationJob
LISTS = ListsJob()
RESCAN = RescanJob()


class TimerKind(enum.Enum):
    POLL = "poll"  # ask the server for the conversation's messages
    RECHECK = "recheck"  # look again: a file or a prompt settling
    RETRY = "retry"  # the outbox after a failure
    FORGET = "forget"  # drop the messages kept as a send's baseline


@dataclass(frozen=True, slots=True)
class Timer:
    at: float  # monotonic
    kind: TimerKind
    conversation_id: str


class Scheduler:
    """Due jobs, timers, lane queues and the busy set, under one lock."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        # The scheduler thread and claimers wait on ``changed``, workers on ``work``: scheduling a job wakes
        # one worker, not every thread (a first mirror schedules thousands).
        self.changed = threading.Condition(self.lock)
        self.work = threading.Condition(self.lock)
        self._due: dict[Job, float] = {}
        self._lanes: dict[Job, Lane] = {}  # the lane of each due job
        self._first_hint: dict[Job, float] = {}
        self._queues: dict[Lane, deque[Job]] = {lane: deque() for lane in Lane}
        self._queued: dict[Job, Lane] = {}
        self._busy: set[Job] = set()
        self._running: dict[Job, Lane] = {}  # the lane of each running job, raised by a more urgent reason
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._background_open = False
        self.idle = 0  # workers waiting for a job

    # --- jobs -----------------------------------------------------------------------------------------------

    def schedule(self, job: Job, delay: float = 0.0, *, debounce: bool = False, lane: Lane = Lane.INTERACTIVE) -> None:
        """Run ``job`` in ``delay`` seconds (earlier if already due earlier); debounced, each call moves it back
        to ``delay`` from now, up to ``DEBOUNCE_CAP`` delays after the first."""
        with self.lock:
            now = self.clock()
            at = now + delay
            self._lanes[job] = min(self._lanes.get(job, lane), lane)
            self._raise(job, lane)
            if debounce:
                first = self._first_hint.setdefault(job, now)
                self._due[job] = min(at, first + delay * DEBOUNCE_CAP) if job in self._due else at
            else:
                self._due[job] = min(self._due.get(job, at), at)
            self.changed.notify_all()

    def due_at(self, job: Job, at: float, lane: Lane) -> None:
        """Make ``job`` due at ``at`` unless it is due already; its lane is the most urgent asked."""
        with self.lock:
            self._due.setdefault(job, at)
            self._lanes[job] = min(self._lanes.get(job, lane), lane)
            self._raise(job, lane)
            self.changed.notify_all()

    def run_now(self, job: Job, lane: Lane = Lane.INTERACTIVE) -> None:
        """Make ``job`` due now, whatever time it was due at."""
        with self.lock:
            self._due[job] = self.clock()
            self._lanes[job] = min(self._lanes.get(job, lane), lane)
            self.changed.notify_all()

    def dispatch(self, now: float) -> float:
        """Queue the jobs due by ``now``; return when the next one (or timer) falls due."""
        with self.lock:
            wake = now + TICK
            if self._timers:
                wake = min(wake, self._timers[0][0])
            for job, at in list(self._due.items()):
                if at > now:
                    wake = min(wake, at)
                    continue
                if job in self._busy and job not in self._queued:
                    continue  # it runs: again once it is done
                # Queued already: when it runs it sees whatever this was for (flags live in the runtime).
                # Dropping it keeps ``_due`` small; a more urgent reason moves it up to its lane.
                del self._due[job]
                self._first_hint.pop(job, None)
                lane = self._lanes.pop(job, Lane.INTERACTIVE)
                queued = self._queued.get(job)
                if queued is not None and lane >= queued:
                    continue
                if queued is not None:
                    self._queues[queued].remove(job)
                self._queues[lane].append(job)
                self._queued[job] = lane
                self.work.notify()
            return wake

    def next_job(self) -> tuple[Job, Lane] | None:
        """The most urgent queued job a worker may take now (it becomes busy), or None."""
        with self.lock:
            for lane, queue in self._queues.items():
                if lane is Lane.BACKGROUND and not self._background_open:
                    break
                while queue and (lane is Lane.INTERACTIVE or self.idle > 1):
                    job = queue.popleft()
                    del self._queued[job]
                    if job not in self._busy:
                        self._busy.add(job)
                        self._running[job] = lane
                        return job, lane
                    self.due_at(job, self.clock(), lane)  # claimed meanwhile: after the claim
            return None

    def take(self, stopping: Callable[[], bool]) -> tuple[Job, Lane] | None:
        """Wait for a job this worker may take (it becomes busy); None once ``stopping``."""
        with self.lock:
            self.idle += 1
            try:
                while not stopping():
                    job = self.next_job()
                    if job is not None:
                        return job
                    self.work.wait(TICK)
                return None
            finally:
                self.idle -= 1

    def done(self, job: Job) -> None:
        """A worker finished ``job`` (or a claim ends)."""
        with self.lock:
            self._busy.discard(job)
            self._running.pop(job, None)
            self.changed.notify_all()

    def claim(self, job: Job, *, wait: bool, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Take ``job``'s key for work outside its job. Busy: False, or with ``wait`` wait for it (holding
        nothing); False when ``stopping``."""
        with self.lock:
            while job in self._busy:
                if not wait or stopping():
                    return False
                self.changed.wait(TICK)
            self._busy.add(job)
            return True

    def lane_of(self, job: Job) -> Lane:
        """The lane a running job's requests go in now: raised while it runs when a more urgent reason for it
        comes (a save in a conversation being polled), so the person does not wait for its background
        requests."""
        with self.lock:
            return self._running.get(job, Lane.INTERACTIVE)

    def _raise(self, job: Job, lane: Lane) -> None:
        running = self._running.get(job)
        if running is not None and lane < running:
            self._running[job] = lane

    def busy(self, job: Job) -> bool:
        with self.lock:
            return job in self._busy

    def open_background(self) -> None:
        """Background jobs may run from now on."""
        with self.lock:
            self._background_open = True
            self.work.notify_all()

    # --- timers ---------------------------------------------------------------------------------------------

    def add_timer(self, timer: Timer) -> None:
        with self.lock:
            heapq.heappush(self._timers, (timer.at, next(self._order), timer))
            self.changed.notify_all()

    def due_timers(self, now: float) -> list[Timer]:
        """The timers due by ``now``, earliest first (removed from the heap)."""
        with self.lock:
            out: list[Timer] = []
            while self._timers and self._timers[0][0] <= now:
                out.append(heapq.heappop(self._timers)[2])
            return out

    def drop_timers(self, keep: Callable[[Timer], bool]) -> None:
        """Forget the timers ``keep`` rejects (superseded ones, so the heap stays small)."""
        with self.lock:
            self._timers = [e for e in self._timers if keep(e[2])]
            heapq.heapify(self._timers)
