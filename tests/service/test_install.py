"""`convsync service install|uninstall`: the unit with this install's ExecStart; systemctl or the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convsync.service import convsync_command, exec_start, install, systemd_quote, uninstall
from tests.service.test_unit_file import needs_systemd_analyze, settings, verify

VENV_CONVSYNC = Path(sys.executable).parent / "convsync"


@pytest.fixture
def no_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds nothing, so there is no systemctl."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A systemctl on PATH that logs its arguments and succeeds; returns the log file."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 0\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "api-key"
    key.write_text("s4w_install-test")
    key.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: http://127.0.0.1:9/api/v2\n  api_key_file: {key}\nroot: {tmp_path / 'r'}\n")
    return path


def unit_file(home: Path) -> Path:
    return home / ".config/systemd/user/convsync.service"


@pytest.mark.usefixtures("no_systemctl")
def test_install_without_systemctl_writes_unit_and_prints_commands(isolated_home: Path, config_file: Path) -> None:
    """Without systemctl the unit is written to the user's systemd dir and the exact commands are printed."""
    lines: list[str] = []

    code = install(config_file, start=True, say=lines.append)

    text = "\n".join(lines)
    assert code == 0
    assert "systemctl --user daemon-reload" in text
    assert "systemctl --user enable --now convsync.service" in text
    unit = settings(unit_file(isolated_home).read_text())
    assert unit["ExecStart"] == f"{VENV_CONVSYNC} run --config {config_file}"


@needs_systemd_analyze
@pytest.mark.usefixtures("no_systemctl")
def test_installed_unit_verifies(
    isolated_home: Path, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit install writes passes systemd-analyze verify without warnings."""
    install(config_file, start=True, say=lambda _: None)
    monkeypatch.setenv("PATH", os.defpath)

    done = verify(unit_file(isolated_home), tmp_path)

    assert (done.returncode, done.stderr) == (0, "")


def test_install_with_systemctl_reloads_enables_and_starts(
    isolated_home: Path, config_file: Path, fake_systemctl: Path
) -> None:
    """With a working systemctl --user: daemon-reload, then enable --now."""
    code = install(config_file, start=True, say=lambda _: None)

    assert code == 0
    assert fake_systemctl.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now convsync.service",
    ]


def test_install_no_start_only_reloads(isolated_home: Path, config_file: Path, fake_systemctl: Path) -> None:
    """--no-start writes the unit and reloads systemd but neither enables nor starts it."""
    install(config_file, start=False, say=lambda _: None)

    assert "enable" not in fake_systemctl.read_text()
    assert unit_file(isolated_home).exists()


@pytest.mark.usefixtures("no_systemctl")
def test_install_warns_that_a_service_cannot_see_the_shell_key(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config reading the key from an environment variable gets a note on giving the service the key."""
    monkeypatch.setenv("CONVSYNC_API_KEY", "s4w_from-shell")
    config = tmp_path / "c.yaml"
    config.write_text(f"server:\n  url: http://127.0.0.1:9/api/v2\nroot: {tmp_path}\n")
    lines: list[str] = []

    install(config, start=True, say=lines.append)

    text = "\n".join(lines)
    assert "which a service does not see" in text
    assert "LoadCredential=" in text
    assert "s4w_from-shell" not in text


@pytest.mark.usefixtures("no_systemctl")
def test_install_warns_about_a_broken_config(isolated_home: Path, tmp_path: Path) -> None:
    """A config the service could not start with is reported (exit 78 ahead) but the unit is still written."""
    config = tmp_path / "c.yaml"
    config.write_text("server: {}\n")
    lines: list[str] = []

    assert install(config, start=True, say=lines.append) == 0

    assert any("exit with status 78" in line for line in lines)
    assert any("server.url: missing" in line for line in lines)


@pytest.mark.usefixtures("no_systemctl")
def test_uninstall_removes_unit_and_enablement(isolated_home: Path, config_file: Path) -> None:
    """uninstall removes the unit and its default.target.wants link and says what to run."""
    install(config_file, start=True, say=lambda _: None)
    wants = isolated_home / ".config/systemd/user/default.target.wants"
    wants.mkdir()
    (wants / "convsync.service").symlink_to(unit_file(isolated_home))
    lines: list[str] = []

    assert uninstall(config_file, say=lines.append) == 0

    assert not unit_file(isolated_home).exists()
    assert not (wants / "convsync.service").is_symlink()
    assert "systemctl --user daemon-reload" in "\n".join(lines)


def test_uninstall_with_systemctl_disables_first(isolated_home: Path, config_file: Path, fake_systemctl: Path) -> None:
    """With systemctl, uninstall runs disable --now before removing the unit, then daemon-reload."""
    install(config_file, start=False, say=lambda _: None)
    fake_systemctl.write_text("")

    uninstall(config_file, say=lambda _: None)

    calls = fake_systemctl.read_text().splitlines()
    assert "--user disable --now convsync.service" in calls
    assert calls[-1] == "--user daemon-reload"


def test_exec_start_includes_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config chosen by $CONVSYNC_CONFIG is written into ExecStart: the service does not see the env."""
    monkeypatch.setenv("CONVSYNC_CONFIG", str(tmp_path / "c.yaml"))

    assert exec_start(None).endswith(f" run --config {tmp_path / 'c.yaml'}")


def test_exec_start_names_the_default_config_explicitly(isolated_home: Path) -> None:
    """Without --config or $CONVSYNC_CONFIG the default file is written out (the service has no XDG_CONFIG_HOME)."""
    assert exec_start(None) == f"{VENV_CONVSYNC} run --config {isolated_home / '.config/convsync/config.yaml'}"


def fake_interpreter(directory: Path) -> Path:
    """An interpreter path in ``directory`` (a symlink to this Python), as a venv or a distribution has one."""
    directory.mkdir(parents=True)
    interpreter = directory / "python3"
    interpreter.symlink_to(sys.executable)
    return interpreter


def test_command_is_the_script_next_to_the_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a venv or a pipx venv the convsync script sits next to the interpreter and is used directly."""
    interpreter = fake_interpreter(tmp_path / "venv/bin")
    script = tmp_path / "venv/bin/convsync"
    script.write_text(f"#!{interpreter}\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))

    assert convsync_command() == [str(script)]


def test_command_is_a_user_script_for_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install --user`: a convsync on PATH whose #! names this interpreter is used."""
    interpreter = fake_interpreter(tmp_path / "usr/bin")
    user_bin = tmp_path / "home/.local/bin"
    user_bin.mkdir(parents=True)
    script = user_bin / "convsync"
    script.write_text(f"#!{interpreter}\nimport convsync\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    monkeypatch.setenv("PATH", str(user_bin))

    assert convsync_command() == [str(script)]


def test_command_ignores_a_script_of_another_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A convsync on PATH that belongs to another interpreter is not used: `python -m convsync` instead."""
    interpreter = fake_interpreter(tmp_path / "usr/bin")
    other_bin = tmp_path / "other/bin"
    other_bin.mkdir(parents=True)
    (other_bin / "convsync").write_text("#!/opt/other/python3\n")
    (other_bin / "convsync").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    monkeypatch.setenv("PATH", str(other_bin))

    assert convsync_command() == [str(interpreter), "-m", "convsync"]


def test_systemd_quoting() -> None:
    """Spaces and quotes are quoted; % and $ are escaped from specifier and variable expansion."""
    assert systemd_quote("/usr/bin/convsync") == "/usr/bin/convsync"
    assert systemd_quote("/home/a b/c.yaml") == '"/home/a b/c.yaml"'
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote("$HOME") == "$$HOME"
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'


@needs_systemd_analyze
@pytest.mark.usefixtures("no_systemctl")
def test_config_path_with_spaces_and_percent_verifies(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An awkward config path still yields a unit that verifies and names the path exactly."""
    config = tmp_path / "my configs" / "100% conv.yaml"
    config.parent.mkdir()
    install(config, start=True, say=lambda _: None)
    monkeypatch.setenv("PATH", os.defpath)

    done = verify(unit_file(isolated_home), tmp_path)

    assert (done.returncode, done.stderr) == (0, "")
    assert f'"{tmp_path}/my configs/100%% conv.yaml"' in unit_file(isolated_home).read_text()


def test_service_install_command_line(isolated_home: Path, config_file: Path, tmp_path: Path) -> None:
    """`convsync service install` run with a PATH lacking systemctl exits 0 and prints the commands."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    done = subprocess.run(
        [sys.executable, "-m", "convsync", "service", "install", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(empty)},
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "systemctl --user enable --now convsync.service" in done.stdout
    assert unit_file(isolated_home).exists()


@pytest.mark.usefixtures("no_systemctl")
def test_install_no_start_does_not_present_enabling_as_a_step(isolated_home: Path, config_file: Path) -> None:
    """--no-start without systemctl lists daemon-reload as the step, and `enable --now` only as an option."""
    lines: list[str] = []

    assert install(config_file, start=False, say=lines.append) == 0

    steps = [line for line in lines if line.startswith("  systemctl")]
    assert steps == ["  systemctl --user daemon-reload"]
    assert any(line.startswith("Not enabled, not started (--no-start)") for line in lines)
