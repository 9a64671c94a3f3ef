"""The daemon's main loop around a fake engine: READY after the first scan, STATUS, WATCHDOG while healthy,
reload, stop. The daemon runs in a thread here and is driven through request_stop/request_reload."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convsync.config import Config, load_config
from convsync.daemon import Daemon, sync_once
from convsync.errors import AlreadyRunning, RootUnavailable
from convsync.lock import InstanceLock
from convsync.notify import Notifier
from tests.service.conftest import NotifyListener
from tests.service.fake_engine import FakeEngine
from tests.waiting import wait_until

URL = "http://127.0.0.1:9/api/v2"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVSYNC_API_KEY", "s4w_daemon-loop-test")
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: {URL}\nroot: {tmp_path / 'root'}\nstate_dir: {tmp_path / 'state'}\n")
    return path


class Running:
    """A Daemon serving in a thread, with its engine and notify socket."""

    def __init__(self, daemon: Daemon, engine: FakeEngine, notify: NotifyListener) -> None:
        self.daemon, self.engine, self.notify = daemon, engine, notify
        self.result: list[int | BaseException] = []
        self.thread = threading.Thread(target=self._serve, name="test-daemon")

    def _serve(self) -> None:
        try:
            self.result.append(self.daemon.run())
        except BaseException as exc:
            self.result.append(exc)

    def stop(self) -> int | BaseException:
        self.daemon.request_stop("test")
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        return self.result[0]


Starter = Callable[..., Running]


@pytest.fixture
def start(config_file: Path, notify_socket: NotifyListener) -> Iterator[Starter]:
    runs: list[Running] = []

    def starter(*, ready: bool = True, watchdog_usec: int | None = 100_000) -> Running:
        config = load_config(config_file)
        engine = FakeEngine(config, ready=ready)
        environ = {"NOTIFY_SOCKET": notify_socket.address}
        if watchdog_usec is not None:
            environ["WATCHDOG_USEC"] = str(watchdog_usec)
        daemon = Daemon(
            config,
            config_file,
            engine_factory=lambda _config: engine,
            notifier=Notifier(environ),
            status_interval=0.05,
            stop_timeout=3.0,
        )
        running = Running(daemon, engine, notify_socket)
        running.thread.start()
        runs.append(running)
        return running

    yield starter
    for running in runs:
        if running.thread.is_alive():
            running.stop()


def test_ready_only_after_the_first_full_scan(start: Starter, notify_socket: NotifyListener) -> None:
    """READY=1 is withheld while the engine's first scan runs and sent once it is done."""
    running = start(ready=False)
    notify_socket.wait_for("STATUS=", times=3)
    assert "READY=1" not in notify_socket.lines()
    assert any(line.startswith("STATUS=starting") for line in notify_socket.lines())

    running.engine.ready.set()

    notify_socket.wait_for("READY=1")
    assert running.stop() == 0


def test_status_carries_the_engine_summary(start: Starter, notify_socket: NotifyListener) -> None:
    """STATUS= repeats the engine's one-line summary every status interval."""
    running = start()
    running.engine.text = "5 conversations, 0 queued prompts, 2 queued uploads, last error: none"

    notify_socket.wait_for(f"STATUS={running.engine.text}", times=2)
    running.stop()


def test_watchdog_pings_while_healthy(start: Starter, notify_socket: NotifyListener) -> None:
    """WATCHDOG=1 comes every half WATCHDOG_USEC while the engine is healthy."""
    running = start(watchdog_usec=100_000)

    notify_socket.wait_for("WATCHDOG=1", times=5)
    running.stop()


def test_watchdog_withheld_while_unhealthy(start: Starter, notify_socket: NotifyListener) -> None:
    """An unhealthy engine gets no WATCHDOG=1, so systemd would kill and restart the daemon."""
    running = start(watchdog_usec=100_000)
    notify_socket.wait_for("WATCHDOG=1")
    running.engine.is_healthy = False
    statuses = sum(1 for line in notify_socket.lines() if line.startswith("STATUS="))
    pings = notify_socket.count("WATCHDOG=1")

    # Several status periods (and so several watchdog periods) pass without a ping beyond one in flight.
    notify_socket.wait_for("STATUS=", times=statuses + 6)

    assert notify_socket.count("WATCHDOG=1") <= pings + 1
    running.stop()


def test_no_watchdog_without_watchdog_usec(start: Starter, notify_socket: NotifyListener) -> None:
    """Without $WATCHDOG_USEC no pings are sent."""
    running = start(watchdog_usec=None)
    notify_socket.wait_for("STATUS=", times=4)

    assert "WATCHDOG=1" not in notify_socket.lines()
    running.stop()


def test_stop_notifies_and_stops_the_engine_bounded(start: Starter, notify_socket: NotifyListener) -> None:
    """A stop request sends STOPPING=1, stops the engine with the bounded timeout and returns 0."""
    running = start()
    notify_socket.wait_for("READY=1")

    assert running.stop() == 0

    assert "STOPPING=1" in notify_socket.lines()
    assert running.engine.stop_timeout == 3.0
    assert running.engine.calls == ["start", "stop 3"]


def test_stop_releases_the_lock(start: Starter, config_file: Path) -> None:
    """After the daemon stopped, its state directory can be locked again."""
    running = start()
    running.stop()

    with InstanceLock(config_file.parent / "state"):
        pass


def test_reload_applies_the_changed_config(start: Starter, notify_socket: NotifyListener, config_file: Path) -> None:
    """A reload request sends RELOADING=1, hands the re-read config to the engine, then READY=1."""
    running = start()
    notify_socket.wait_for("READY=1")
    config_file.write_text(config_file.read_text() + "log_level: debug\n")

    running.daemon.request_reload()

    lines = notify_socket.wait_for("READY=1", times=2)
    assert lines.index("RELOADING=1") < len(lines) - 1 - lines[::-1].index("READY=1")
    assert [c.log_level for c in running.engine.reloaded] == ["debug"]
    assert running.daemon.config.log_level == "debug"
    running.stop()


def test_reload_with_a_broken_config_keeps_the_old_one(
    start: Starter, notify_socket: NotifyListener, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken config on reload is logged; the old config stays in force and READY=1 is sent again."""
    running = start()
    notify_socket.wait_for("READY=1")
    old = running.daemon.config
    config_file.write_text(config_file.read_text() + "log_level: loud\n")

    running.daemon.request_reload()

    notify_socket.wait_for("READY=1", times=2)
    assert running.engine.reloaded == []
    assert running.daemon.config is old
    assert "reload failed" in caplog.text
    assert "log_level" in caplog.text
    assert running.thread.is_alive()
    running.stop()


def test_a_failed_reload_is_one_log_line(
    start: Starter, notify_socket: NotifyListener, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reload failure is logged as one line naming every problem (the log would escape a line break)."""
    running = start()
    notify_socket.wait_for("READY=1")
    config_file.write_text(config_file.read_text() + "log_level: loud\non_local_delete: shred\n")

    running.daemon.request_reload()

    notify_socket.wait_for("READY=1", times=2)
    [failed] = [r.getMessage() for r in caplog.records if "reload failed" in r.getMessage()]
    assert "\n" not in failed
    assert "log_level" in failed
    assert "on_local_delete" in failed
    running.stop()


def test_reload_cannot_move_the_state_dir(
    start: Starter, notify_socket: NotifyListener, config_file: Path, tmp_path: Path
) -> None:
    """A reload that changes state_dir is refused (the lock belongs to the old one): restart instead."""
    running = start()
    notify_socket.wait_for("READY=1")
    config_file.write_text(config_file.read_text().replace(str(tmp_path / "state"), str(tmp_path / "elsewhere")))

    running.daemon.request_reload()

    notify_socket.wait_for("READY=1", times=2)
    assert running.engine.reloaded == []
    running.stop()


def test_second_daemon_on_the_same_state_dir_is_refused(start: Starter, config_file: Path) -> None:
    """A daemon whose state directory is locked raises AlreadyRunning before creating its engine."""
    running = start()
    wait_until(lambda: running.engine.calls, what="the first daemon to start its engine")
    config = load_config(config_file)
    created: list[Config] = []

    def factory(c: Config) -> FakeEngine:
        created.append(c)
        return FakeEngine(c)

    with pytest.raises(AlreadyRunning):
        Daemon(config, config_file, engine_factory=factory, notifier=Notifier({})).run()

    assert created == []
    running.stop()


def test_engine_start_failure_still_stops_the_engine(config_file: Path) -> None:
    """If the engine fails to start (e.g. no root marker), it is stopped and the error propagates."""
    config = load_config(config_file)
    engine = FakeEngine(config)
    engine.fail_start = RootUnavailable("no marker")

    with pytest.raises(RootUnavailable):
        Daemon(config, config_file, engine_factory=lambda _c: engine, notifier=Notifier({})).run()

    assert engine.calls == ["start", "stop 20"]


def test_sync_once_runs_one_pass_under_the_lock(config_file: Path) -> None:
    """sync_once runs the engine's run_once and exits 0; a held lock makes it raise AlreadyRunning."""
    config = load_config(config_file)
    engine = FakeEngine(config)

    assert sync_once(config, engine_factory=lambda _c: engine) == 0
    assert engine.calls == ["run_once", "stop 20"]

    with InstanceLock(config_file.parent / "state"), pytest.raises(AlreadyRunning):
        sync_once(config, engine_factory=lambda _c: engine)


def test_start_and_reload_warn_while_verification_is_off(
    start: Starter, notify_socket: NotifyListener, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`verify_tls: false` is logged as a warning at start and again at each reload that keeps it."""
    config_file.write_text(config_file.read_text().replace(f"  url: {URL}\n", f"  url: {URL}\n  verify_tls: false\n"))
    running = start()
    notify_socket.wait_for("READY=1")
    at_start = [r for r in caplog.records if r.levelname == "WARNING" and "server.verify_tls" in r.getMessage()]

    running.daemon.request_reload()

    notify_socket.wait_for("READY=1", times=2)
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "server.verify_tls" in r.getMessage()]
    assert len(at_start) == 1 and len(warned) == 2
    assert "server.ca_bundle" in warned[-1].getMessage()
    running.stop()
