"""The emulator's mutable run-time state, shared by the HTTP layer and the in-process controls.

Everything here may be touched from the server's event-loop thread and from the thread that owns the
``EmulatorServer`` (tests), so each piece guards itself with a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

from convsync.emulator.agent import ScriptedAgent
from convsync.emulator.options import EmulatorOptions, FaultRule, FaultState, RequestRecord, StreamRecord
from convsync.emulator.store import Store

T = TypeVar("T")
P = ParamSpec("P")

LOG_LIMIT = 200_000  # records kept in the request log and in the stream log each


class WorkerPool(Executor):
    """A fixed set of worker threads, all started up front and joined by ``shutdown``.

    Unlike ``ThreadPoolExecutor``, no thread appears later in the middle of someone's test.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}") for i in range(workers)]
        self._closed = False
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        future: Future[T] = Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while (job := self._jobs.get_nowait()) is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class FaultTable:
    """The active fault rules; ``pick`` returns the rule a request hits, counting it."""

    def __init__(self, rules: tuple[FaultRule, ...], seed: int) -> None:
        self._lock = threading.Lock()
        self._states = [FaultState(rule) for rule in rules]
        self._random = random.Random(seed)  # noqa: S311 - reproducible fault dice, not cryptography

    def set(self, rules: list[FaultRule] | tuple[FaultRule, ...]) -> None:
        with self._lock:
            self._states = [FaultState(rule) for rule in rules]

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._states.append(FaultState(rule))

    def snapshot(self) -> list[FaultState]:
        with self._lock:
            return [FaultState(s.rule, s.hits, s.exhausted) for s in self._states]

    def pick(self, method: str, path: str, route: str | None) -> FaultRule | None:
        with self._lock:
            for state in self._states:
                rule = state.rule
                if state.exhausted or rule.count == 0 or not _matches(rule, method, path, route):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                state.hits += 1
                state.exhausted = rule.count is not None and state.hits >= rule.count
                return rule
        return None


def _matches(rule: FaultRule, method: str, path: str, route: str | None) -> bool:
    if rule.method is not None and rule.method.upper() not in ("*", method.upper()):
        return False
    if rule.path is not None and re.search(rule.path, path) is None:
        return False
    return rule.route is None or rule.route == route


class RateLimiter:
    """A fixed window like express-rate-limit's memory store: ``limit`` requests, then 429 until it resets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._count = 0

    def hit(self, limit: int, window: float) -> tuple[bool, int, int]:
        """Counts one request: (allowed, remaining, seconds until the window resets)."""
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= window:
                self._window_start = now
                self._count = 0
            self._count += 1
            reset = max(1, math.ceil(self._window_start + window - now))
            return self._count <= limit, max(0, limit - self._count), reset

    def reset(self) -> None:
        with self._lock:
            self._window_start = 0.0
            self._count = 0


class Runtime:
    def __init__(self, options: EmulatorOptions, store: Store) -> None:
        self._lock = threading.Lock()
        self._options = options
        self.store = store
        self.faults = FaultTable(options.faults, options.seed)
        self.limiter = RateLimiter()
        # Bounded, so an emulator serving a long benchmark does not grow without end.
        self._requests: deque[RequestRecord] = deque(maxlen=LOG_LIMIT)
        self._stream_log: deque[StreamRecord] = deque(maxlen=LOG_LIMIT)
        self.executor: WorkerPool | None = None
        self.agent = ScriptedAgent(store, self.offload)
        # Event-loop-only state (touched from the server thread only).
        self.run_tasks: set[asyncio.Task[Any]] = set()
        self.transports: set[asyncio.Transport] = set()

    @property
    def options(self) -> EmulatorOptions:
        with self._lock:
            return self._options

    def configure(self, **changes: Any) -> EmulatorOptions:
        with self._lock:
            self._options = replace(self._options, **changes)
            return self._options

    async def offload(self, fn: Callable[[], T]) -> T:
        """Runs blocking work (disk, pyarrow) in the server's own worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    # --- logs -----------------------------------------------------------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def record_text(self, record: StreamRecord) -> None:
        with self._lock:
            self._stream_log.append(record)

    @property
    def stream_log(self) -> list[StreamRecord]:
        with self._lock:
            return list(self._stream_log)

    def clear_stream_log(self) -> None:
        with self._lock:
            self._stream_log.clear()
