"""``convsync service install|uninstall``: the systemd user unit, its ``ExecStart`` as convsync is installed.

The unit text lives here (``render_unit``) so the installed unit and the repository's
``systemd/convsync.service`` cannot drift apart (a test compares them). ``docs/service.md`` explains it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from convsync import paths
from convsync.cli import Exit
from convsync.config import CREDENTIAL_NAME, load_config
from convsync.errors import ConfigError

# ExecStart of the unit in the repository: where `pipx install` / `pip install --user` put the script.
DEFAULT_EXEC_START = "%h/.local/bin/convsync run"

UNIT_TEMPLATE = """\
# convsync: Agent API conversations mirrored as local folders (a systemd user unit).
# `convsync service install` writes this file with ExecStart pointing at the installed convsync;
# to install by hand, copy it to ~/.config/systemd/user/ and fix ExecStart. See docs/service.md.

[Unit]
Description=convsync: Agent API conversations mirrored as local folders
# Give up after 5 failed starts within 10 minutes (retry with: systemctl --user reset-failed convsync).
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=10s
# Exits a restart cannot fix: 2 usage, 65 state database unusable (convsync repair),
# 73 another instance runs, 76 TLS certificate not trusted, 77 API key refused, 78 config invalid.
RestartPreventExitStatus=2 65 73 76 77 78
# READY=1 comes after the first full scan, which may take a while on a large account.
TimeoutStartSec=15min
# SIGTERM: convsync finishes or checkpoints the step in flight (at most 20 s), then exits 0.
TimeoutStopSec=30s
# convsync pings every 30 s while its workers are healthy; a stuck daemon is killed and restarted.
WatchdogSec=60s
UMask=0077

# The API key as a systemd credential (systemd >= 250); convsync reads
# $CREDENTIALS_DIRECTORY/{credential} before the key source in its config. Keep the file chmod 600.
#LoadCredential={credential}:%E/convsync/api-key

# Hardening that works in a user unit (seccomp and prctl based; no namespaces needed).
# MemoryDenyWriteExecute= is safe: CPython, pyarrow and ssl were checked under it (docs/service.md).
NoNewPrivileges=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes

[Install]
WantedBy=default.target
"""

Say = Callable[[str], None]


def render_unit(exec_start: str) -> str:
    """The unit file's text with ``exec_start`` (already quoted for systemd) as its command line."""
    return UNIT_TEMPLATE.format(exec_start=exec_start, credential=CREDENTIAL_NAME)


def systemd_quote(arg: str) -> str:
    """One command-line word as systemd reads it: ``%``/``$`` escaped, quoted if it holds spaces or quotes."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c.isspace() or c in "\"'\\;" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def convsync_command() -> list[str]:
    """How to start this very convsync: its script beside the interpreter, else ``python -m convsync``.

    ``sys.executable`` is used as is (not resolved): in a venv or a pipx venv the symlink is what selects
    the venv. A script found on ``PATH`` counts only if its ``#!`` names this interpreter (``pip --user``).
    """
    if not sys.executable:
        return ["convsync"]
    interpreter = Path(sys.executable)
    beside = interpreter.parent / "convsync"
    if _is_executable(beside):
        return [str(beside)]
    on_path = shutil.which("convsync")
    if on_path and _is_executable(Path(on_path)) and _shebang_runs(Path(on_path), interpreter):
        return [str(Path(on_path).absolute())]
    return [str(interpreter), "-m", "convsync"]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _shebang_runs(script: Path, interpreter: Path) -> bool:
    try:
        with script.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode(errors="replace").split()
    return bool(words) and Path(words[0]).resolve() == interpreter.resolve()


def exec_start(config_path: Path | None) -> str:
    """The unit's ``ExecStart=`` value: this convsync's ``run --config FILE``.

    FILE is the config this shell would use (``--config``, ``$CONVSYNC_CONFIG``, the user config dir), as an
    absolute path: the service sees neither the shell's ``$CONVSYNC_CONFIG`` nor its ``$XDG_CONFIG_HOME``.
    """
    words = [*convsync_command(), "run", "--config", str(paths.config_file(config_path).absolute())]
    return " ".join(systemd_quote(w) for w in words)


def unit_path() -> Path:
    return paths.systemd_user_unit_dir() / paths.UNIT_NAME


def _systemctl_works() -> bool:
    """Whether ``systemctl --user`` reaches a running user manager."""
    if shutil.which("systemctl") is None:
        return False
    try:
        done = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _systemctl(args: Sequence[str], say: Say) -> bool:
    command = ["systemctl", "--user", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"  {' '.join(command)} failed: {exc}")
        return False
    if done.returncode != 0:
        say(f"  {' '.join(command)} failed (exit {done.returncode}): {done.stderr.strip()}")
        return False
    say(f"  ran: {' '.join(command)}")
    return True


def _check_config(config_path: Path | None, say: Say) -> None:
    """Warn (not fail) about a config the service could not start with."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        say("Warning: the service will exit with status 78 until the config is fixed:")
        for problem in exc.problems:
            say(f"  - {problem}")
        return
    if config.api_key_source.startswith("environment variable"):
        variable = config.api_key_source.removeprefix("environment variable ")
        say(
            f"Note: the config reads the API key from ${variable}, which a service does not see.\n"
            f"  Either put the key in a private file and point server.api_key_file at it:\n"
            f"    (umask 077; printf '%s' \"${variable}\" > {paths.user_config_dir() / 'api-key'})\n"
            f"  or pass it as a credential: uncomment LoadCredential= in {unit_path()}\n"
            f'  or, until the next login: systemctl --user set-environment {variable}="${variable}"'
        )


def install(config_path: Path | None, start: bool, *, say: Say = print) -> int:
    """Write the user unit for this convsync, then enable and start it (or print how to)."""
    target = unit_path()
    existed = target.exists()
    command = exec_start(config_path)
    paths.systemd_user_unit_dir().mkdir(parents=True, exist_ok=True)
    paths.write_atomically(target, render_unit(command).encode(), 0o644)
    say(f"{'Updated' if existed else 'Wrote'} {target}")
    say(f"  ExecStart={command}")
    _check_config(config_path, say)

    steps = ["daemon-reload", "enable --now convsync.service"] if start else ["daemon-reload"]
    if _systemctl_works():
        for step in steps:
            if not _systemctl(step.split(), say):
                say("The unit is written; fix the error above, then run:")
                say("\n".join(f"  systemctl --user {s}" for s in steps))
                return Exit.TRANSIENT
        if start:
            say("convsync runs as a service now. Watch it with:")
            say("  systemctl --user status convsync")
            say("  journalctl --user -u convsync -f")
        else:
            say("Start it with: systemctl --user enable --now convsync.service")
    else:
        say("systemctl --user is not available here; run these once a user session with systemd is up:")
        say("  systemctl --user daemon-reload")
        say("  systemctl --user enable --now convsync.service")
    say('To keep it running while you are logged out: loginctl enable-linger "$USER"')
    return Exit.OK


def uninstall(*, say: Say = print) -> int:
    """Stop and disable the service and remove its unit file."""
    target = unit_path()
    works = _systemctl_works()
    if works and target.exists():
        _systemctl(["disable", "--now", paths.UNIT_NAME], say)
    # What `disable` removes, removed by hand too (systemctl may be unreachable or have failed).
    wants = paths.systemd_user_unit_dir() / "default.target.wants" / paths.UNIT_NAME
    if wants.is_symlink():
        wants.unlink()
    if target.exists():
        target.unlink()
        say(f"Removed {target}")
    else:
        say(f"No unit at {target}; nothing to remove")
    if works:
        _systemctl(["daemon-reload"], say)
    else:
        say("systemctl --user is not available here; once it is, run:")
        say(f"  systemctl --user stop {paths.UNIT_NAME}")
        say("  systemctl --user daemon-reload")
    return Exit.OK
