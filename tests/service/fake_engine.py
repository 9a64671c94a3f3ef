"""A stand-in for ``convsync.mirror.engine.Engine``, same interface, recording what the daemon asks of it.

Also runnable: ``python -m tests.service.fake_engine CONFIG`` runs ``run_daemon`` with it (for the signal
tests); each call is then appended as one line to the file named by ``$FAKE_ENGINE_LOG``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from convsync.config import Config


class FakeEngine:
    def __init__(self, config: Config, *, ready: bool = True) -> None:
        self.config = config
        self.ready = threading.Event()
        if ready:
            self.ready.set()
        self.calls: list[str] = []
        self.reloaded: list[Config] = []
        self.is_healthy = True
        self.stop_timeout: float | None = None
        self.fail_start: Exception | None = None
        self.text = "2 conversations, 1 queued prompt, 0 queued uploads"

    def _record(self, call: str) -> None:
        self.calls.append(call)
        log = os.environ.get("FAKE_ENGINE_LOG")
        if log:
            with Path(log).open("a") as f:
                f.write(call + "\n")

    def start(self) -> None:
        self._record("start")
        if self.fail_start is not None:
            raise self.fail_start

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_timeout = timeout
        self._record(f"stop {timeout:g}")

    def reload(self, config: Config) -> None:
        self.reloaded.append(config)
        self._record(f"reload log_level={config.log_level}")

    def run_once(self) -> str:
        self._record("run_once")
        return "1 conversation synced"

    def full_pass(self, timeout: float | None = None, *, first: bool = False) -> None:
        if not first:  # the daemon's look at the first pass's outcome is a query, not a request
            self._record("full_pass")

    def summary(self) -> str:
        return self.text

    def healthy(self) -> bool:
        return self.is_healthy


if __name__ == "__main__":
    from convsync.config import load_config
    from convsync.daemon import run_daemon
    from convsync.logs import setup_logging

    config_path = Path(sys.argv[1])
    setup_logging()
    sys.exit(run_daemon(load_config(config_path), config_path, engine_factory=FakeEngine))
