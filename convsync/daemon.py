"""The daemon's life cycle around the sync engine: lock, start, readiness, status, watchdog, reload, stop.

::

    run_daemon: lock the state dir, warn about weakened trust (convsync.trust), Engine(config).start(), then
    until stopped:
        first full scan done             → READY=1 (or exit 77/76: it met a refused key / an untrusted certificate)
        every few seconds                → STATUS=<summary>
        every WATCHDOG_USEC/2, if healthy → WATCHDOG=1
        SIGHUP                           → RELOADING=1, reload the config, READY=1
        SIGTERM/SIGINT                   → STOPPING=1, engine.stop(bounded), exit 0

Signal handlers only set a flag and poke a socket pair; the main thread, sleeping in ``select`` on that
socket, does the work. The engine owns every other thread.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from convsync import paths
from convsync.cli import Exit
from convsync.config import Config, load_config
from convsync.control import PASS_TIMEOUT_SECONDS, ControlServer, Progress, Reply, error_reply
from convsync.errors import ApiError, AuthError, ConfigError, ConvsyncError, TransientError, UntrustedCertificate
from convsync.heartbeat import STOPPED_STATUS, Heartbeat, mark_folders_stopped
from convsync.instances import unit_for
from convsync.lock import InstanceLock, RootLock
from convsync.logs import set_level
from convsync.mirror.engine import Engine
from convsync.notify import Notifier
from convsync.trust import log_trust_warnings

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 20.0  # the unit's TimeoutStopSec= (30 s) leaves room for the rest of the shutdown
_STARTUP_POLL_SECONDS = 0.02  # how often readiness is checked until the first scan is done


class EngineLike(Protocol):
    """What the daemon needs of ``convsync.mirror.engine.Engine``."""

    def start(self) -> None: ...
    def wait_ready(self, timeout: float | None = None) -> bool: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def reload(self, config: Config) -> None: ...
    def run_once(self) -> object: ...
    def full_pass(self, timeout: float | None = None, *, first: bool = False) -> ApiError | None: ...
    def summary(self) -> object: ...
    def healthy(self) -> bool: ...


EngineFactory = Callable[[Config], EngineLike]


class Daemon:
    """One ``convsync run``; ``request_stop``/``request_reload`` are safe from signal handlers and threads."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        *,
        engine_factory: EngineFactory | None = None,
        notifier: Notifier | None = None,
        status_interval: float = STATUS_INTERVAL_SECONDS,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.config = config
        # Reload from the very file we started with, even if $CONVSYNC_CONFIG changed meanwhile.
        self.config_path = config_path or config.config_file
        self._engine_factory = engine_factory
        self.notifier = notifier or Notifier()
        self.status_interval = status_interval
        self.stop_timeout = stop_timeout
        self._stop_signal: str | None = None
        self._reload_requested = False
        self._engine: EngineLike | None = None
        self._ready = False
        self._reloads = threading.Condition()
        self._reload_outcome: tuple[int, str | None] = (0, None)  # (reloads done, the last one's problem)
        self._heartbeat: Heartbeat | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- requests (signal handlers, other threads) -----------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop_signal is None:
            self._stop_signal = reason
        self._poke()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer already means "wake up"
            self._wake_w.send(b"\0")

    # -- the main thread -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the exit code (0 after a graceful stop)."""
        state_dir = paths.state_dir(self.config.state_dir)
        try:
            with InstanceLock(state_dir), RootLock(self.config.root, state_dir), self._signal_handlers():
                self._heartbeat = Heartbeat(state_dir)
                self._heartbeat.start()
                log.info(
                    "convsync starting: root %s, server %s, %s, state in %s",
                    self.config.root,
                    self.config.url,
                    "no key (server.auth: none)"
                    if self.config.auth == "none"
                    else f"key from the {self.config.api_key_source or 'config'} (server.auth: {self.config.auth})",
                    state_dir,
                )
                log_trust_warnings(self.config, log)
                self.notifier.status("starting")
                engine = (self._engine_factory or Engine)(self.config)
                self._engine = engine
                control = ControlServer(state_dir, self)
                try:
                    try:
                        engine.start()
                        control.start()
                        self._loop(engine)
                    except BaseException:
                        self._shutdown(engine, quiet=True)
                        raise
                    self._shutdown(engine, quiet=False)
                finally:
                    control.stop()  # after the engine: its stop releases a `convsync sync` waiting for a pass
        finally:
            self._wake_r.close()
            self._wake_w.close()
        return Exit.OK

    def _loop(self, engine: EngineLike) -> None:
        ready = False
        watchdog_interval = self.notifier.watchdog_interval()
        next_status = time.monotonic()
        next_watchdog = time.monotonic()
        healthy = True
        while self._stop_signal is None:
            if self._reload_requested:
                self._reload_requested = False
                self._reload(engine, ready)
            if not ready and engine.wait_ready(timeout=0):
                self._check_first_pass(engine)
                ready = self._ready = True
                log.info("ready: the first full scan is done")
                self.notifier.ready()
                next_status = time.monotonic()
            now = time.monotonic()
            if now >= next_status:
                summary_value = engine.summary()
                summary = str(summary_value)
                self.notifier.status(summary if ready else f"starting: first scan; {summary}")
                self._beat(engine, summary_value)
                next_status = now + self.status_interval
                healthy = self._check_health(engine, healthy)
            if watchdog_interval is not None and now >= next_watchdog:
                healthy = self._check_health(engine, healthy)
                if healthy:
                    self.notifier.watchdog()
                next_watchdog = now + watchdog_interval
            wake_at = min(next_status, next_watchdog if watchdog_interval is not None else math.inf)
            if not ready:
                wake_at = min(wake_at, now + _STARTUP_POLL_SECONDS)
            self._sleep(wake_at - time.monotonic())
        log.info("stopping (%s)", self._stop_signal)

    def _beat(self, engine: EngineLike, summary: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.update(
                last_contact=getattr(engine, "last_contact", None), last_error=getattr(summary, "last_error", None)
            )

    def _check_first_pass(self, engine: EngineLike) -> None:
        """A key refused (exit 77) or a certificate that cannot be trusted (exit 76) in the first pass stops the
        daemon: retrying cannot fix either, a person must (after the start, both show as problems while it retries)."""
        try:
            error = engine.full_pass(timeout=0, first=True)
        except TimeoutError:  # the first pass did not reach the server (no mirror root): nothing to judge
            return
        if isinstance(error, UntrustedCertificate):
            raise error  # its message names the config keys that fix it
        if isinstance(error, AuthError):
            raise AuthError(
                f"{self.config.url} refused the API key from the {self.config.api_key_source or 'config'}: "
                f"{error.message}",
                status=error.status,
                code=error.code,
                error_id=error.error_id,
            )

    def _check_health(self, engine: EngineLike, was_healthy: bool) -> bool:
        healthy = engine.healthy()
        if was_healthy and not healthy:
            log.error("the sync engine is stuck (a worker died or made no progress); withholding the watchdog ping")
        elif healthy and not was_healthy:
            log.info("the sync engine is healthy again")
        return healthy

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._wake_r], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _reload(self, engine: EngineLike, ready: bool) -> None:
        self.notifier.reloading()
        log.info("reloading the configuration from %s", self.config_path or "the default location")
        try:
            new = load_config(self.config_path, profile=self.config.profile)
            if paths.state_dir(new.state_dir) != paths.state_dir(self.config.state_dir):
                raise ConfigError(
                    [
                        "state_dir: cannot change while convsync runs. Fix: restart it "
                        f"(systemctl --user restart {unit_for(self.config.config_file, self.config.profile)})"
                    ]
                )
            engine.reload(new)
        except ConvsyncError as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            # One line (the log escapes a line break, so a list would read "\n  - …" in the journal).
            log.error("reload failed; still running with the previous configuration: %s", "; ".join(problems))
            self.notifier.status(f"reload failed, running with the previous configuration: {problems[0]}")
            self._reloaded(problems[0])
        else:
            self.config = new
            set_level(new.log_level)
            log.info("configuration reloaded")
            log_trust_warnings(new, log)
            self._reloaded(None)
        if ready:
            self.notifier.ready()

    def _reloaded(self, problem: str | None) -> None:
        with self._reloads:
            self._reload_outcome = (self._reload_outcome[0] + 1, problem)
            self._reloads.notify_all()

    # -- the control socket (its own threads) ----------------------------------------------------

    def control_sync(self, progress: Progress) -> Reply:
        """``convsync sync`` while this daemon runs: a full pass now, answered when its lists part is done."""
        engine = self._engine
        assert engine is not None
        started = time.monotonic()
        progress("asked the daemon for a full pass (the server's lists, then every folder)")
        try:
            error = engine.full_pass(timeout=PASS_TIMEOUT_SECONDS)
        except TimeoutError:
            return error_reply(TransientError(f"the pass did not finish within {PASS_TIMEOUT_SECONDS:g} s"))
        if self._stop_signal is not None:
            return error_reply(TransientError("the daemon is stopping; the pass may not have run"))
        if error is not None:
            return error_reply(error)
        summary = str(engine.summary())
        progress(f"lists checked in {time.monotonic() - started:.1f} s; every folder queued for a look")
        return {"ok": True, "summary": summary}

    def control_status(self) -> Reply:
        """``convsync status``: the live figures."""
        engine = self._engine
        assert engine is not None
        summary = engine.summary()
        figures = asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else {}
        return {"ok": True, "pid": os.getpid(), "ready": self._ready, "summary": str(summary), **figures}

    def control_reload(self) -> Reply:
        """``convsync reload``: SIGHUP's reload, answered once it is done (or failed)."""
        with self._reloads:
            done = self._reload_outcome[0]
            self.request_reload()
            if not self._reloads.wait_for(lambda: self._reload_outcome[0] > done, timeout=60):
                return error_reply(TransientError("the daemon did not reload within 60 s"))
            problem = self._reload_outcome[1]
        if problem is not None:
            return {"ok": False, "error": {"kind": "config", "message": f"reload failed, still running: {problem}"}}
        return {"ok": True}

    def _shutdown(self, engine: EngineLike, *, quiet: bool) -> None:
        self.notifier.stopping()
        self.notifier.status("stopping: finishing the step in flight")
        try:
            engine.stop(timeout=self.stop_timeout)
        except Exception:
            if not quiet:
                raise
            log.exception("stopping the sync engine failed as well")
        if self._heartbeat is not None and not quiet:
            self._heartbeat.stopped()
            marked = mark_folders_stopped(self.config, paths.state_dir(self.config.state_dir))
            log.debug("%d conversation folders say %r", marked, STOPPED_STATUS)
        log.info("stopped")

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may install handlers (tests drive request_stop directly)
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if signum == signal.SIGHUP:
                self.request_reload()
            else:
                self.request_stop(signal.Signals(signum).name)

        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_daemon(
    config: Config,
    config_path: Path | None,
    *,
    engine_factory: EngineFactory | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``convsync run``: mirror until SIGTERM/SIGINT, reload on SIGHUP; exit code per ``cli.Exit``."""
    # What is loaded by now (modules, classes) lives as long as the process: the collector need not walk it
    # again in every full collection (measured: ~4 % of the CPU of a first mirror went to collections).
    gc.freeze()
    return Daemon(config, config_path, engine_factory=engine_factory, notifier=notifier).run()


def sync_once(config: Config, *, engine_factory: EngineFactory | None = None) -> int:
    """``convsync sync``: one full blocking reconcile pass under the instance lock, then exit 0 (or raise)."""
    state_dir = paths.state_dir(config.state_dir)
    with InstanceLock(state_dir), RootLock(config.root, state_dir):
        log_trust_warnings(config, log)
        engine = (engine_factory or Engine)(config)
        try:
            report = engine.run_once()
        finally:
            engine.stop(timeout=STOP_TIMEOUT_SECONDS)  # no threads ran; this closes the client and the state
    log.info("sync done: %s", report)
    return Exit.OK
