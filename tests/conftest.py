"""Fixtures shared by every test: an isolated home, no leaked threads, and the emulator on loopback; the crash
campaign's seed, one per run."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_until

CAMPAIGN_SEED = pytest.StashKey[int]()
CAMPAIGN_RAN = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--campaign-seed",
        type=int,
        default=None,
        help="seed of the crash campaign tests (default: $CONVSYNC_CAMPAIGN_SEED, else a random one per run)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # One seed for the whole run, chosen before any test and printed in the header and the summary, so that a
    # failure found by any campaign test replays with the same seed.
    seed = config.getoption("campaign_seed") or int(os.environ.get("CONVSYNC_CAMPAIGN_SEED", "0"))
    config.stash[CAMPAIGN_SEED] = seed or int.from_bytes(os.urandom(4), "big")


def campaign_seed_line(config: pytest.Config) -> str:
    seed = config.stash[CAMPAIGN_SEED]
    return f"crash campaign seed: {seed} (replay with CONVSYNC_CAMPAIGN_SEED={seed} or --campaign-seed={seed})"


def pytest_report_header(config: pytest.Config) -> str:
    return campaign_seed_line(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if config.stash.get(CAMPAIGN_RAN, False):
        terminalreporter.write_line(campaign_seed_line(config))


@pytest.fixture
def campaign_seed(pytestconfig: pytest.Config) -> int:
    """The run's crash campaign seed (see ``--campaign-seed``)."""
    pytestconfig.stash[CAMPAIGN_RAN] = True
    return pytestconfig.stash[CAMPAIGN_SEED]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME and XDG dirs, so no test reads or writes the developer's real files."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ]:
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    # The daemons' control sockets too: not in the developer's runtime dir, nor in the shared /tmp fallback.
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var in (
        "CONVSYNC_CONFIG",
        "CONVSYNC_PROFILE",
        "CONVSYNC_API_KEY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "CREDENTIALS_DIRECTORY",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test must stop and join every thread it started, daemon threads too (watchdog's observers are daemon
    threads: a watcher left running would go unnoticed otherwise). A thread gets a short grace to end; only a
    thread named in the test's ``leaves_threads`` marker may outlive it."""
    allowed = tuple(str(m.args[0]) for m in request.node.iter_markers("leaves_threads"))
    before = set(threading.enumerate())
    yield

    def leaked() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name not in allowed]

    try:
        wait_until(lambda: not leaked(), timeout=10, what="threads started by the test to end")
    except AssertionError:
        names = ", ".join(
            f"{t.name} ({'daemon, ' if t.daemon else ''}{type(t).__module__}.{type(t).__qualname__})" for t in leaked()
        )
        raise AssertionError(f"the test left threads running: {names}") from None
