"""``convsync service install|uninstall``: the systemd user unit, its ``ExecStart`` as convsync is installed.

The unit text lives here (``render_unit``) so the installed unit and the repository's
``systemd/convsync.service`` cannot drift apart (a test compares them). ``docs/service.md`` explains it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from convsync import instances, paths
from convsync.cli import Exit
from convsync.config import CREDENTIAL_NAME, PROFILE_ENV, load_config
from convsync.errors import ConfigError
from convsync.instances import Instance

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


def render_unit(exec_start: str, *, template: bool = False) -> str:
    """The unit file's text with ``exec_start`` (already quoted for systemd) as its command line.

    ``template``: ``convsync@.service``, whose instances read their config from a drop-in (``convsync.instances``).
    """
    text = UNIT_TEMPLATE.format(exec_start=exec_start, credential=CREDENTIAL_NAME)
    if not template:
        return text
    return text.replace(
        "# `convsync service install` writes this file with ExecStart pointing at the installed convsync;\n"
        "# to install by hand, copy it to ~/.config/systemd/user/ and fix ExecStart. See docs/service.md.\n",
        "# The template of `convsync service install --profile NAME`: instance NAME reads CONVSYNC_CONFIG and\n"
        "# CONVSYNC_PROFILE from its drop-in convsync@NAME.service.d/convsync.conf. See docs/service.md.\n",
    ).replace("Description=convsync:", "Description=convsync (%i):")


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


def install(config_path: Path | None, start: bool, *, profile: str = "", say: Say = print) -> int:
    """Write the user unit for this convsync, then enable and start it (or print how to).

    A config without profiles gets ``convsync.service``, unless that already runs another config; a profile,
    or that other config, gets an instance of ``convsync@.service`` (``convsync.instances``).
    """
    config = paths.config_file(config_path).absolute()
    profile = profile or _chosen_profile(config)
    if not profile:
        plain = unit_path()
        other = _other_config(plain, config)
        if other is None:
            return _install_plain(config_path, start, say)
        say(f"{plain} runs another config ({other}); it is left as it is.")
    name = instances.name_for(config, profile)
    if name is None:
        say(f"convsync service install: cannot make a unit name from {config.name!r}; pass --profile NAME")
        return Exit.USAGE
    return _install_instance(Instance(name, config, profile), config_path, start, say)


def _chosen_profile(config: Path) -> str:
    """The profile a command would use with this config ($CONVSYNC_PROFILE, else the config's own rule)."""
    try:
        return load_config(config, read_key=False).profile
    except ConfigError:
        return os.environ.get(PROFILE_ENV, "").strip()


def _other_config(plain: Path, config: Path) -> str | None:
    """The config ``convsync.service`` runs when that is not ``config`` (None: absent, or this very config)."""
    try:
        text = plain.read_text()
    except FileNotFoundError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("ExecStart=")), "")
    if " --config " not in line:  # a unit copied by hand (systemd/convsync.service): the default config
        default = paths.default_config_file().absolute()
        return None if config == default else str(default)
    # The whole value, not a prefix: /a/work.yaml is not /a/work.yaml.old.
    other = line.partition(" --config ")[2].strip()
    return None if other == systemd_quote(str(config)) else other


def _install_instance(inst: Instance, config_path: Path | None, start: bool, say: Say) -> int:
    existing = instances.installed(inst.name)
    if existing is not None and existing != inst.drop_in_text():
        said = next((ln for ln in existing.splitlines() if ln.startswith("Environment=")), existing.strip())
        say(f"{inst.unit} already runs another config ({said.removeprefix('Environment=')}); it is left as it is.")
        say("  Remove it first (convsync service uninstall with its --config/--profile), or pass another --profile.")
        return Exit.USAGE
    unit_dir = paths.systemd_user_unit_dir()
    unit_dir.mkdir(parents=True, exist_ok=True)
    template = unit_dir / instances.TEMPLATE_NAME
    text = render_unit(" ".join(systemd_quote(w) for w in [*convsync_command(), "run"]), template=True)
    if not template.exists() or template.read_text() != text:  # the other instances' unit stays byte for byte
        paths.write_atomically(template, text.encode(), 0o644)
        say(f"Wrote {template}")
    inst.drop_in_dir().mkdir(parents=True, exist_ok=True)
    paths.write_atomically(inst.drop_in(), inst.drop_in_text().encode(), 0o644)
    say(f"{'Kept' if existing is not None else 'Wrote'} {inst.drop_in()}")
    say(f"  {inst.unit} runs {inst.config}" + (f", profile {inst.profile}" if inst.profile else ""))
    _check_config(config_path, say)
    return _activate(inst.unit, start, say)


def _install_plain(config_path: Path | None, start: bool, say: Say) -> int:
    target = unit_path()
    existed = target.exists()
    command = exec_start(config_path)
    paths.systemd_user_unit_dir().mkdir(parents=True, exist_ok=True)
    paths.write_atomically(target, render_unit(command).encode(), 0o644)
    say(f"{'Updated' if existed else 'Wrote'} {target}")
    say(f"  ExecStart={command}")
    _check_config(config_path, say)
    return _activate(paths.UNIT_NAME, start, say)


def _activate(unit: str, start: bool, say: Say) -> int:
    short = unit.removesuffix(".service")
    steps = ["daemon-reload", f"enable --now {unit}"] if start else ["daemon-reload"]
    if _systemctl_works():
        for step in steps:
            if not _systemctl(step.split(), say):
                say("The unit is written; fix the error above, then run:")
                say("\n".join(f"  systemctl --user {s}" for s in steps))
                return Exit.TRANSIENT
        if start:
            say("convsync runs as a service now. Watch it with:")
            say(f"  systemctl --user status {short}")
            say(f"  journalctl --user -u {short} -f")
        else:
            say(f"Not enabled, not started (--no-start). When you want it: systemctl --user enable --now {unit}")
    elif start:
        say("systemctl --user is not available here; run these once a user session with systemd is up:")
        say("  systemctl --user daemon-reload")
        say(f"  systemctl --user enable --now {unit}")
    else:
        say("systemctl --user is not available here; once a user session with systemd is up, run:")
        say("  systemctl --user daemon-reload")
        say(f"Not enabled, not started (--no-start). When you want it: systemctl --user enable --now {unit}")
    say('To keep it running while you are logged out: loginctl enable-linger "$USER"')
    return Exit.OK


def uninstall(config_path: Path | None = None, *, profile: str = "", say: Say = print) -> int:
    """Stop and disable the service of this config (and profile) and remove its unit file (or its instance)."""
    config = paths.config_file(config_path).absolute()
    profile = profile or _chosen_profile(config)
    name = instances.name_for(config, profile)
    if name is not None and instances.installed(name) == Instance(name, config, profile).drop_in_text():
        return _uninstall_instance(Instance(name, config, profile), say)
    if profile:
        say(f"No instance of convsync@.service runs {config} with the profile {profile}; nothing to remove")
        return Exit.OK
    other = _other_config(unit_path(), config)
    if other is not None:
        say(f"{unit_path()} runs another config ({other}), not {config}; it is left as it is.")
        say(f"  To remove it: convsync --config {other} service uninstall")
        return Exit.OK
    return _uninstall_plain(say)


def _uninstall_instance(inst: Instance, say: Say) -> int:
    works = _systemctl_works()
    if works:
        _systemctl(["disable", "--now", inst.unit], say)
    wants = paths.systemd_user_unit_dir() / "default.target.wants" / inst.unit
    if wants.is_symlink():
        wants.unlink()
    inst.drop_in().unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        inst.drop_in_dir().rmdir()
    say(f"Removed {inst.drop_in()}")
    if not instances.remaining():
        template = paths.systemd_user_unit_dir() / instances.TEMPLATE_NAME
        if template.exists():
            template.unlink()
            say(f"Removed {template} (no instance left)")
    if works:
        _systemctl(["daemon-reload"], say)
    return Exit.OK


def _uninstall_plain(say: Say) -> int:
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
