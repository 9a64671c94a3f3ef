"""``convsync doctor``: check everything a daemon needs and print each problem with its fix.

Checks, in order: the config, the trust settings (``convsync.trust``: verification off, plain http to another
machine), the API key source, the server (reachable, certificate trusted, key accepted, configured agents
visible), the mirror root and its marker, inotify limits against the folders under the root, the state
directory. Without a key the server check is skipped (and said so); the local checks still run. Exits 0 when
all pass, else with the code (``convsync.cli.Exit``) of the first failing check.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from convsync import paths
from convsync.api.client import AgentClient
from convsync.api.models import Agent
from convsync.cli import Exit
from convsync.config import Config, load_config
from convsync.errors import (
    ApiError,
    AuthError,
    ConfigError,
    NotFound,
    ProtocolError,
    RedirectRefused,
    UntrustedCertificate,
)
from convsync.heartbeat import daemon_state
from convsync.instances import unit_for
from convsync.lock import holder_pid
from convsync.logs import redact
from convsync.trust import trust_warnings

Say = Callable[[str], None]

INOTIFY_WATCHES_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
INOTIFY_INSTANCES_FILE = Path("/proc/sys/fs/inotify/max_user_instances")
_SYSCTL_FILE = "/etc/sysctl.d/60-convsync-inotify.conf"
_WATCH_HEADROOM = 0.8  # other programs (editors, IDEs, file managers) use watches too


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    topic: str
    message: str
    fix: str = ""
    code: Exit = Exit.OK


class Report:
    """The findings so far, printed as they come."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.findings: list[Finding] = []

    def ok(self, topic: str, message: str) -> None:
        self._add(Finding(True, topic, message))

    def problem(self, topic: str, message: str, fix: str, code: Exit) -> None:
        self._add(Finding(False, topic, message, fix, code))

    def skipped(self, topic: str, why: str) -> None:
        """A check that was not run, and why (it needs something an earlier check found missing)."""
        self.say(redact(f"skipped  {topic}: {why}"))

    def info(self, topic: str, message: str) -> None:
        self.say(redact(f"info     {topic}: {message}"))

    def _add(self, finding: Finding) -> None:
        self.findings.append(finding)
        label = "ok      " if finding.ok else "PROBLEM "
        self.say(redact(f"{label} {finding.topic}: {finding.message}"))
        for index, line in enumerate(finding.fix.splitlines()):
            self.say(redact(f"         {'fix: ' if index == 0 else '     '}{line}"))

    def exit_code(self) -> int:
        for finding in self.findings:
            if not finding.ok:
                return finding.code
        return Exit.OK


def run_doctor(config_path: Path | None, *, say: Say = print) -> int:
    """``convsync doctor``: print every check's result and each problem's fix; exit code per the contract."""
    report = Report(say)
    try:
        config = load_config(config_path, require_key=False)
    except ConfigError as exc:
        for problem in exc.problems:
            message, _, fix = problem.partition(". Fix: ")
            report.problem("config", message, fix, Exit.CONFIG)
        for topic in ("trust", "API key", "server", "root", "inotify", "state", "daemon"):
            report.skipped(topic, "needs a valid config (fix the problems above)")
        say("Fix the problems above and run convsync doctor again.")
        return report.exit_code()
    report.ok("config", str(config.config_file))
    _check_trust(config, report)  # needs neither the key nor the network
    if config.api_key_problem:
        for problem in config.api_key_problem.splitlines():
            message, _, fix = problem.partition(". Fix: ")
            report.problem("API key", message, fix, Exit.CONFIG)
        # The local checks below still run: they need neither the key nor the network.
        report.skipped("server", "needs the API key (fix the problem above)")
    else:
        if config.auth == "none":
            report.ok("API key", "none needed (server.auth: none)")
        else:
            report.ok("API key", f"read from the {config.api_key_source} (sent as server.auth: {config.auth})")
        _check_server(config, report)
    _check_root(config, report)
    check_inotify(config.root, report)
    _check_state_dir(paths.state_dir(config.state_dir), report)
    _check_daemon(paths.state_dir(config.state_dir), report, unit_for(config.config_file, config.profile))
    code = report.exit_code()
    say("All checks passed." if code == Exit.OK else f"Some checks failed (exit status {int(code)}).")
    return code


def _check_daemon(state_dir: Path, report: Report, unit: str) -> None:
    """The daemon's heartbeat (``convsync.heartbeat``); the lock's pid covers a daemon too old to beat."""
    daemon = daemon_state(state_dir, unit=unit)
    if daemon.running:
        report.ok("daemon", daemon.text)
        return
    pid = holder_pid(state_dir)
    if pid:
        report.ok("daemon", f"running (pid {pid}) with this state directory")
        return
    text, _, fix = daemon.text.partition(" — ")
    if daemon.pid is None:
        # Never started: doctor is the check before a first start (the README runs it before `service install`).
        report.info("daemon", f"not started yet — {fix}")
        return
    report.problem("daemon", text, fix, Exit.DAEMON_NOT_RUNNING)


def _client(config: Config) -> AgentClient:
    return AgentClient.from_config(config, max_retries=1)


def _check_trust(config: Config, report: Report) -> None:
    warnings = trust_warnings(config)
    for warning in warnings:
        report.problem("trust", f"{warning.key}: {warning.message}", warning.fix, Exit.CONFIG)
    if not warnings:
        report.ok("trust", "TLS verified" if config.url.startswith("https:") else "plain http to this machine only")


def _check_server(config: Config, report: Report) -> None:
    try:
        with _client(config) as client:
            agents = client.list_agents()
    except UntrustedCertificate as exc:
        message, _, fix = exc.message.partition(". Fix: ")
        report.problem("server", f"{config.url}: {message}", fix, Exit.TLS_UNTRUSTED)
        return
    except RedirectRefused as exc:
        message, _, fix = exc.message.partition(". Fix: ")
        report.problem("server", f"{config.url}: {message}", fix, Exit.CONFIG)
        return
    except AuthError as exc:
        if config.auth == "none":
            report.problem(
                "server",
                f"{config.url} wants a key (server.auth is none): {exc}",
                "set server.auth: bearer (or snowflake) and a key source (server.api_key_env/_file/_command)",
                Exit.AUTH,
            )
            return
        report.problem(
            "server",
            f"{config.url} refused the API key from the {config.api_key_source} sent as server.auth: "
            f"{config.auth}: {exc}",
            "check that the key is current and belongs to this tenant (create a new one in the web UI), and "
            "that server.auth matches the deployment (bearer; snowflake for a Snowflake-hosted one)",
            Exit.AUTH,
        )
        return
    except NotFound as exc:
        report.problem(
            "server",
            f"{config.url} has no agents route ({exc})",
            "the base URL is probably wrong; it looks like https://HOST/tenants/TENANT/api/v2",
            Exit.CONFIG,
        )
        return
    except ProtocolError as exc:
        report.problem(
            "server",
            f"{config.url} does not answer like the Agent API ({exc})",
            "check server.url: it must be the API base URL, not the web UI's address",
            Exit.CONFIG,
        )
        return
    except ApiError as exc:
        report.problem(
            "server",
            f"cannot reach {config.url}: {exc}",
            "check server.url, the network and any proxy; for TLS problems: server.ca_bundle or "
            "server.truststore (server.verify_tls: false only for a test server)",
            Exit.TRANSIENT,
        )
        return
    names = ", ".join(sorted(a.name for a in agents)[:5]) + (", …" if len(agents) > 5 else "")
    report.ok(
        "server",
        f"{config.url} {'answered without a key' if config.auth == 'none' else 'accepted the key'}; "
        f"{len(agents)} agent(s) visible" + (f": {names}" if agents else ""),
    )
    _check_agents(config, agents, report)


def _check_agents(config: Config, agents: list[Agent], report: Report) -> None:
    by_id = {a.id for a in agents}
    by_name = {a.name.casefold() for a in agents}
    for index, selector in enumerate(config.agents):
        if selector.id is not None and selector.id not in by_id:
            report.problem(
                f"agents[{index}]",
                f"no visible agent has the id {selector.id}",
                "copy the id from the server, or select the agent by name",
                Exit.CONFIG,
            )
        elif selector.name is not None and selector.name.casefold() not in by_name:
            visible = ", ".join(sorted(a.name for a in agents)) or "none"
            report.problem(
                f"agents[{index}]",
                f"no visible agent is named {selector.name!r}",
                f"use one of the visible agents' names ({visible})",
                Exit.CONFIG,
            )


def _check_root(config: Config, report: Report) -> None:
    root = config.root
    marker = root / paths.ROOT_MARKER_NAME
    if not root.is_dir():
        report.problem(
            "root",
            f"{root} does not exist (or is not a folder)",
            f"create it with its marker: mkdir -p {root} && touch {marker}  (or run convsync init)",
            Exit.ROOT_UNAVAILABLE,
        )
    elif not marker.exists():
        report.problem(
            "root",
            f"{root} has no {paths.ROOT_MARKER_NAME} marker, so convsync will not touch it "
            "(an unmounted disk looks like this)",
            f"mount the disk that holds it; if this really is the mirror root: touch {marker}",
            Exit.ROOT_UNAVAILABLE,
        )
    elif not os.access(root, os.W_OK | os.X_OK):
        report.problem("root", f"{root} is not writable by you", f"chmod u+rwx {root}", Exit.ROOT_UNAVAILABLE)
    else:
        report.ok("root", f"{root} (marker present)")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def count_dirs(root: Path, stop_after: int) -> int:
    """Folders under ``root``, itself included (each takes an inotify watch), counted up to ``stop_after``."""
    if not root.is_dir():
        return 0
    count = 0
    for _ in os.walk(root, followlinks=False):
        count += 1
        if count >= stop_after:
            break
    return count


def check_inotify(
    root: Path,
    report: Report,
    watches_file: Path = INOTIFY_WATCHES_FILE,
    instances_file: Path = INOTIFY_INSTANCES_FILE,
) -> None:
    """Enough inotify watches for every folder under the root (the watcher needs one per folder)."""
    limit = _read_int(watches_file)
    if limit is None:
        report.info("inotify", f"cannot read {watches_file}; not checked")
        return
    folders = count_dirs(root, stop_after=limit + 1)
    if folders > limit * _WATCH_HEADROOM:
        suggested = max(524_288, 1 << max(folders * 4, 1).bit_length())
        report.problem(
            "inotify",
            f"{folders} folders under {root} need as many watches; fs.inotify.max_user_watches is {limit}",
            f"raise the limit:\n"
            f"echo fs.inotify.max_user_watches={suggested} | sudo tee {_SYSCTL_FILE}\n"
            f"sudo sysctl --system",
            Exit.CONFIG,
        )
    else:
        report.ok("inotify", f"{folders} folder(s) to watch, max_user_watches is {limit}")
    instances = _read_int(instances_file)
    if instances is not None and instances < 8:
        report.problem(
            "inotify",
            f"fs.inotify.max_user_instances is only {instances}",
            f"echo fs.inotify.max_user_instances=128 | sudo tee -a {_SYSCTL_FILE}\nsudo sysctl --system",
            Exit.CONFIG,
        )


def _check_state_dir(state_dir: Path, report: Report) -> None:
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        if existing == state_dir:
            with tempfile.TemporaryFile(dir=state_dir):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot create {state_dir} inside {existing}")
    except OSError as exc:
        report.problem(
            "state",
            f"the state directory {state_dir} is not usable: {exc.strerror or exc}",
            f"make it yours and writable (chmod 700 {state_dir}), or set state_dir: to another folder",
            Exit.CONFIG,
        )
        return
    mode = 0
    with contextlib.suppress(OSError):
        mode = state_dir.stat().st_mode & 0o777
    if mode & 0o077:
        report.problem(
            "state",
            f"the state directory {state_dir} is accessible by others (mode {mode:04o})",
            f"chmod 700 {state_dir}",
            Exit.CONFIG,
        )
    else:
        report.ok("state", f"{state_dir} is writable" + ("" if existing == state_dir else " (will be created)"))
