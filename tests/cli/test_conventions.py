"""The command line's conventions, each run as a user runs it (subprocess, fresh HOME)."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from convsync.cli import build_parser
from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root
from convsync.mirror.state import DB_NAME
from tests.cli.conftest import KEY_ENV, convsync, write_config

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.fixture
def synced(emulator: EmulatorServer, tmp_path: Path) -> Path:
    """A config whose root holds one synced conversation ("History"); returns the config file."""
    root = tmp_path / "root"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, tmp_path / "state")
    conversation = emulator.create_conversation(emulator.agent_id("Demo Agent"), "History")
    emulator.inject_message(conversation, "a question", role="user")
    done = convsync("sync", "--config", str(config), env={KEY_ENV: emulator.api_key})
    assert done.returncode == 0, done.stderr
    return config


def test_version_prints_the_package_version() -> None:
    """`convsync --version` prints the installed package's version and exits 0."""
    done = convsync("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"convsync {version('convsync')}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_works_before_and_after_the_command(synced: Path, emulator: EmulatorServer, where: str) -> None:
    """`-v` turns on debug output whether it comes before or after the subcommand."""
    args = ["-v", "sync", "--config", str(synced)] if where == "before" else ["sync", "--config", str(synced), "-v"]
    done = convsync(*args, env={KEY_ENV: emulator.api_key})
    assert done.returncode == 0, done.stderr
    assert " DEBUG " in done.stderr


def test_without_verbose_there_is_no_debug_output(synced: Path, emulator: EmulatorServer) -> None:
    """Without `-v` the same command prints no debug lines (so the two tests above can fail)."""
    done = convsync("sync", "--config", str(synced), env={KEY_ENV: emulator.api_key})
    assert done.returncode == 0, done.stderr
    assert " DEBUG " not in done.stderr


def test_quiet_before_the_command_silences_info(synced: Path, emulator: EmulatorServer) -> None:
    """`-q sync` drops the info line `sync` prints at the end."""
    loud = convsync("sync", "--config", str(synced), env={KEY_ENV: emulator.api_key})
    quiet = convsync("-q", "sync", "--config", str(synced), env={KEY_ENV: emulator.api_key})
    assert "sync done" in loud.stderr
    assert quiet.returncode == 0, quiet.stderr
    assert "sync done" not in quiet.stderr


def test_config_before_the_command(synced: Path) -> None:
    """`convsync --config FILE status` reads FILE, like `status --config FILE`."""
    done = convsync("--config", str(synced), "status")
    assert done.returncode == 0, done.stderr  # it worked; no daemon ever ran (only `sync` did): not a failure
    assert "Demo Agent/History" in done.stdout


def test_status_needs_no_key(synced: Path) -> None:
    """`status` with the key's variable unset lists the conversations (exit 0, not 78)."""
    done = convsync("status", "--config", str(synced))
    assert done.returncode == 0, done.stderr
    assert "Demo Agent/History" in done.stdout


def test_status_json_needs_no_key(synced: Path) -> None:
    """`status --json` with the key's variable unset lists the conversations (exit 0, not 78)."""
    done = convsync("status", "--json", "--config", str(synced))
    assert done.returncode == 0, done.stderr
    assert "Demo Agent/History" in done.stdout


def test_sync_still_needs_the_key(synced: Path) -> None:
    """`sync` (which talks to the server) still refuses to start without the key: exit 78 naming the variable."""
    done = convsync("sync", "--config", str(synced))
    assert done.returncode == 78
    assert KEY_ENV in done.stderr


def test_doctor_without_key_names_the_skipped_check_and_runs_the_local_ones(synced: Path) -> None:
    """`doctor` without the key says the server check was skipped and why, and still checks root and state."""
    done = convsync("doctor", "--config", str(synced))
    assert done.returncode == 78
    assert "skipped  server: needs the API key" in done.stdout
    assert "ok       root:" in done.stdout
    assert "ok       state:" in done.stdout


def test_doctor_with_a_broken_config_names_every_skipped_check(tmp_path: Path) -> None:
    """`doctor` on an invalid config lists the checks it could not run, each with the reason."""
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  url: nowhere\n")
    done = convsync("doctor", "--config", str(config))
    assert done.returncode == 78
    for topic in ("trust", "API key", "server", "root", "inotify", "state", "daemon"):
        assert f"skipped  {topic}: needs a valid config" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_a_description_and_examples(command: str) -> None:
    """`convsync COMMAND --help` shows a description and an examples section."""
    done = convsync(command, "--help")
    assert done.returncode == 0, done.stderr
    rest = done.stdout.partition("\n\n")[2]
    assert rest.split("\n\n", 1)[0].strip(), "no description"
    examples = done.stdout.partition("\nexamples:\n")[2]
    assert f"convsync {command}" in examples


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (.ci/run installs man-db)")
def test_man_page_renders(tmp_path: Path) -> None:
    """`man -l` renders the generated page without warnings, with every command in it."""
    page = tmp_path / "convsync.1"
    done = convsync("man")
    assert done.returncode == 0, done.stderr
    page.write_text(done.stdout)
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"MANPAGER": "cat", "MANWIDTH": "100", "PATH": "/usr/bin:/bin"},
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    assert "CONVSYNC(1)" in shown.stdout
    for command in COMMANDS:
        assert f"convsync {command}" in shown.stdout


def test_bash_completion_registers_and_completes_commands() -> None:
    """`source <(convsync completion bash)` registers a completion that completes `st` to `status`."""
    script = (
        f"source <({sys.executable} -m convsync completion bash) && complete -p convsync && "
        'COMP_WORDS=(convsync st) COMP_CWORD=1 && _convsync && echo "got: ${COMPREPLY[*]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "complete -F _convsync convsync" in done.stdout
    assert "got: status" in done.stdout


def test_bash_completion_completes_an_options_choices() -> None:
    """After `service`, bash completion offers the actions install and uninstall."""
    script = (
        f"source <({sys.executable} -m convsync completion bash) && "
        "COMP_WORDS=(convsync -v service '') COMP_CWORD=3 && _convsync && echo \"got: ${COMPREPLY[*]}\""
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "install" in done.stdout.split()
    assert "uninstall" in done.stdout.split()


# Types a line and a TAB into an interactive zsh on a pseudo-terminal (zsh/zpty) and prints what the line became.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty -b z "ZDOTDIR=$1 TERM=dumb zsh -i"
zpty -r -t z out '*> *' || { sleep 1; zpty -r z out; }
out=''
zpty -w -n z "$2"$'\t'
integer i
for i in {1..100}; do
  zpty -r -t z chunk && out+=$chunk
  [[ $out == *"$3"* ]] && break
  sleep 0.05
done
print -r -- "$out"
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)")
@pytest.mark.parametrize(
    ("typed", "completed"),
    [
        ("convsync ser", "convsync service "),
        ("convsync -v service in", "convsync -v service install "),
        ("convsync emulator --next-form u", "convsync emulator --next-form url "),
    ],
)
def test_zsh_completion_completes(tmp_path: Path, typed: str, completed: str) -> None:
    """In an interactive zsh with compinit and the generated script sourced, TAB completes commands, actions
    and option values."""
    script = tmp_path / "_convsync"
    script.write_text(convsync("completion", "zsh").stdout)
    (tmp_path / ".zshrc").write_text(
        f"autoload -Uz compinit && compinit -u -d {tmp_path}/.zcompdump\nsource {script}\nPROMPT='> '\n"
    )
    driver = tmp_path / "driver.zsh"
    driver.write_text(ZSH_DRIVER)
    done = subprocess.run(
        ["zsh", "-f", str(driver), str(tmp_path), typed, completed],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed in done.stdout.replace("\r", ""), done.stdout + done.stderr
    assert "_arguments" not in done.stdout  # no error from the completion functions


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)")
def test_fish_completion_completes_commands(tmp_path: Path) -> None:
    """fish, with the generated script loaded, completes `convsync ser` to `service`."""
    script = tmp_path / "convsync.fish"
    script.write_text(convsync("completion", "fish").stdout)
    done = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C 'convsync ser'"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("service\t")


def test_output_into_a_closed_pipe_is_no_bug(tmp_path: Path) -> None:
    """`convsync man | head -1`: when the reader has gone, convsync stops quietly (exit 0, nothing on stderr),
    not with "unexpected error (a bug)"."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before convsync writes a byte
    try:
        done = subprocess.run(
            [sys.executable, "-m", "convsync", "man"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_bash_completion_completes_a_folder_argument_with_spaces(tmp_path: Path) -> None:
    """`convsync prompt My<TAB>` offers the folder "My chat" as one candidate (a positional path)."""
    (tmp_path / "My chat").mkdir()
    script = (
        f"cd {shlex.quote(str(tmp_path))} && source <({sys.executable} -m convsync completion bash) && "
        'COMP_WORDS=(convsync prompt My) COMP_CWORD=2 && _convsync && printf "<%s>\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "<My chat>\n"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)")
def test_fish_completion_completes_a_folder_argument(tmp_path: Path) -> None:
    """fish completes `convsync prompt My` to the folder "My chat/"."""
    (tmp_path / "My chat").mkdir()
    script = tmp_path / "convsync.fish"
    script.write_text(convsync("completion", "fish").stdout)
    done = subprocess.run(
        [
            "fish",
            "--no-config",
            "-c",
            f"cd {shlex.quote(str(tmp_path))}; source {script}; complete -C 'convsync prompt My'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["My chat/"]


def test_status_while_a_daemon_makes_its_state_database(tmp_path: Path, emulator: EmulatorServer) -> None:
    """`status` that meets the state database a starting daemon has created but not yet given its tables says
    "no state yet" (exit 0), not "unexpected error (a bug)"."""
    root, state = tmp_path / "root", tmp_path / "state"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, state)
    state.mkdir()
    fresh = sqlite3.connect(state / DB_NAME)
    fresh.execute("PRAGMA journal_mode=WAL")  # what State does first, before the schema's commit
    fresh.close()
    done = convsync("status", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "no state yet" in done.stdout


@pytest.mark.parametrize("command", ["status", "reload"])
def test_a_command_that_sends_no_request_does_not_run_the_key_command(
    tmp_path: Path, emulator: EmulatorServer, command: str
) -> None:
    """`status` and `reload` never run server.api_key_command (a `pass` or pinentry prompt for nothing)."""
    marker = tmp_path / "key-command-ran"
    root = tmp_path / "root"
    init_root(root)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n  url: {emulator.base_url}\n"
        f"  api_key_command: \"sh -c 'touch {marker}; echo {emulator.api_key}'\"\n"
        f"root: {root}\nstate_dir: {tmp_path / 'state'}\n"
    )
    done = convsync(command, "--config", str(config))
    assert done.returncode in (0, 75), done.stderr  # no daemon ever ran (status: 0; reload: 75)
    assert not marker.exists()
