"""`convsync doctor`: every check prints ok or the problem with its fix; the exit code follows the contract."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.doctor import Report, check_inotify, run_doctor
from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.heartbeat import Heartbeat

KEY = "s4w_test-key"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def write_config(tmp_path: Path, url: str, extra: str = "", marker: bool = True) -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if marker:
        (root / ".convsync-root").write_text("")
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: {url}\nroot: {root}\nstate_dir: {tmp_path / 'state'}\n{extra}")
    return path


def doctor(config: Path) -> tuple[int, str]:
    lines: list[str] = []
    code = run_doctor(config, say=lines.append)
    return code, "\n".join(lines)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_checks_pass(emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A good config, key, server, root and state dir, a daemon beating: every line is ok and the exit code is 0."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    config = write_config(tmp_path, emu.base_url)
    (tmp_path / "state").mkdir(mode=0o700)
    Heartbeat(tmp_path / "state").start()  # this process plays a daemon that just started

    code, out = doctor(config)

    assert code == 0, out
    assert "PROBLEM" not in out
    for topic in ("config", "API key", "server", "root", "inotify", "state", "daemon"):
        assert f"ok       {topic}:" in out
    assert "Demo Agent" in out
    assert "All checks passed." in out


def test_a_daemon_not_running_is_a_problem_with_the_fix(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything else fine but the daemon stopped: doctor says so, how to start it, and exits 3."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    config = write_config(tmp_path, emu.base_url)
    (tmp_path / "state").mkdir(mode=0o700)
    heartbeat = Heartbeat(tmp_path / "state")
    heartbeat.start()
    heartbeat.stopped()

    code, out = doctor(config)

    assert code == 3, out
    assert "PROBLEM  daemon: NOT running (stopped " in out
    assert "fix: start it with `systemctl --user start convsync` (or run `convsync run`)" in out


def test_a_daemon_never_started_is_no_problem_before_the_first_start(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No daemon ever used the state directory (doctor before a first start): said, with how to start, exit 0."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)

    code, out = doctor(write_config(tmp_path, emu.base_url))

    assert code == 0, out
    assert "info     daemon: not started yet — start it with `systemctl --user start convsync`" in out
    assert "All checks passed." in out


def test_broken_config_exits_78_with_each_fix(tmp_path: Path) -> None:
    """Config problems are listed one per line with their fix, and doctor exits 78."""
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  url: nowhere\nlog_level: loud\n")

    code, out = doctor(path)

    assert code == 78
    assert out.count("PROBLEM  config:") == 3  # the URL, the level, and the unset key variable
    assert "fix: write the full base URL" in out


def test_wrong_key_exits_77(emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key the server refuses is an auth problem: exit 77, and the key itself is not printed."""
    monkeypatch.setenv("CONVSYNC_API_KEY", "s4w_wrong-key-for-doctor")

    code, out = doctor(write_config(tmp_path, emu.base_url))

    assert code == 77, out
    assert "refused the API key" in out
    assert "s4w_wrong-key-for-doctor" not in out


def test_unreachable_server_exits_75(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listening at the URL is a transient problem: exit 75 with advice on URL, network and TLS."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)

    code, out = doctor(write_config(tmp_path, f"http://127.0.0.1:{closed_port()}/api/v2"))

    assert code == 75, out
    assert "cannot reach" in out
    assert "server.verify_tls" in out


def test_missing_root_marker_exits_69(emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root without its marker (an unmounted disk?) is reported with how to restore it: exit 69."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)

    code, out = doctor(write_config(tmp_path, emu.base_url, marker=False))

    assert code == 69, out
    assert "has no .convsync-root marker" in out
    assert f"touch {tmp_path / 'root' / '.convsync-root'}" in out


def test_unknown_agent_selector_is_a_config_problem(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agents: entry that matches no visible agent is reported with the names that do exist."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)

    code, out = doctor(write_config(tmp_path, emu.base_url, "agents:\n  - name: Nobody\n"))

    assert code == 78, out
    assert "no visible agent is named 'Nobody'" in out
    assert "Demo Agent" in out


def test_low_inotify_limit_gives_the_sysctl_fix(tmp_path: Path) -> None:
    """More folders under the root than max_user_watches allows gives the sysctl commands that raise it."""
    root = tmp_path / "root"
    for i in range(20):
        (root / f"agent/conv{i}").mkdir(parents=True)
    limit = tmp_path / "max_user_watches"
    limit.write_text("10\n")
    lines: list[str] = []
    report = Report(lines.append)

    check_inotify(root, report, watches_file=limit, instances_file=tmp_path / "absent")

    out = "\n".join(lines)
    assert report.exit_code() == 78
    assert "fs.inotify.max_user_watches is 10" in out
    assert "echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/60-convsync-inotify.conf" in out
    assert "sudo sysctl --system" in out


def test_state_dir_that_cannot_exist_is_reported(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state_dir below a regular file cannot be created: reported with the fix."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(tmp_path, emu.base_url)
    config.write_text(config.read_text().replace(str(tmp_path / "state"), str(blocker / "state")))

    code, out = doctor(config)

    assert code == 78, out
    assert "PROBLEM  state:" in out


def test_state_dir_open_to_others_is_reported(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state directory others may read is reported with chmod 700."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    (tmp_path / "state").mkdir(mode=0o755)
    (tmp_path / "state").chmod(0o755)

    code, out = doctor(write_config(tmp_path, emu.base_url))

    assert code == 78, out
    assert f"chmod 700 {tmp_path / 'state'}" in out


def test_doctor_command_line(emu: EmulatorServer, tmp_path: Path) -> None:
    """`convsync doctor --config F` prints the checks and exits with the first failing check's code."""
    config = write_config(tmp_path, emu.base_url, marker=False)

    done = subprocess.run(
        [sys.executable, "-m", "convsync", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVSYNC_API_KEY": KEY},
        timeout=60,
        check=False,
    )

    assert done.returncode == 69, done.stdout + done.stderr
    assert "ok       server:" in done.stdout
    assert "PROBLEM  root:" in done.stdout
