"""The running daemon's control socket: ``convsync sync``, ``status`` and ``reload`` talk to it.

::

    $XDG_RUNTIME_DIR/convsync/control-<hash of the state dir>.sock     (dir 0700, socket 0600, owner only)

One daemon per state directory (the instance lock), so the state directory names the socket. Without
``$XDG_RUNTIME_DIR`` the directory is ``/run/user/<uid>/convsync`` when ``/run/user/<uid>`` is the user's (as
under a service), else ``<tmp>/convsync-<uid>`` (created 0700, refused if another user owns it).
The protocol is one JSON request line, then JSON lines back: any number of ``{"progress": "…"}`` and one final
``{"ok": true|false, …}``. A peer of another uid is refused (``SO_PEERCRED``), whatever the file modes say, and
the command trusts only a daemon of its own uid (the temp-dir fallback could be a folder another user made).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from convsync.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConvsyncError,
    NotRunning,
    RedirectRefused,
    TransientError,
    UntrustedCertificate,
)

log = logging.getLogger(__name__)

PASS_TIMEOUT_SECONDS = 15 * 60.0  # a full pass on a large account; the client waits as long
_MAX_REQUEST = 4096
# A client that connects and sends nothing (a stray `nc -U`) must not hold up the daemon's stop, which joins the
# request threads. Only socket operations wait this long; a sync waiting for its pass does not.
READ_TIMEOUT_SECONDS = 10.0

Progress = Callable[[str], None]
Reply = dict[str, Any]


class ControlTarget(Protocol):
    """What the socket serves: the daemon's answers to the three requests."""

    def control_sync(self, progress: Progress) -> Reply: ...
    def control_status(self) -> Reply: ...
    def control_reload(self) -> Reply: ...


# Where systemd-logind makes each user's runtime dir (what a service's $XDG_RUNTIME_DIR is).
SYSTEMD_RUNTIME_BASE = Path("/run/user")


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/convsync``; without it (cron, ``su``, ssh without pam_systemd) the user's
    ``/run/user/<uid>`` when it exists and is theirs, so such a command finds the service's socket; else a
    private per-user folder in the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if base:
        return Path(base) / "convsync"
    uid = os.getuid()
    with contextlib.suppress(OSError):
        info = (SYSTEMD_RUNTIME_BASE / str(uid)).lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
            return SYSTEMD_RUNTIME_BASE / str(uid) / "convsync"
    return Path(tempfile.gettempdir()) / f"convsync-{uid}"


def socket_path(state_dir: Path) -> Path:
    """The control socket of the daemon using ``state_dir``."""
    digest = hashlib.sha256(str(state_dir.expanduser().absolute()).encode()).hexdigest()[:16]
    return runtime_dir() / f"control-{digest}.sock"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConvsyncError(f"{path} is not a folder of yours; remove it or set XDG_RUNTIME_DIR")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


def _peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


# Most specific first: the kind makes the command exit as it would have without a daemon (76, 78, 77, 75).
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (UntrustedCertificate, "tls"),
    (RedirectRefused, "redirect"),
    (AuthError, "auth"),
    (ApiError, "transient"),
)


def error_reply(exc: BaseException) -> Reply:
    """How an error travels back to the command: its kind picks the command's exit code."""
    kind = next((name for cls, name in _KINDS if isinstance(exc, cls)), "other")
    return {"ok": False, "error": {"kind": kind, "message": str(exc)}}


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        if _peer_uid(self.connection) != os.getuid():
            return
        self.connection.settimeout(READ_TIMEOUT_SECONDS)
        try:
            request = json.loads(self.rfile.readline(_MAX_REQUEST) or b"{}")
            op = request.get("op") if isinstance(request, dict) else None
            target = self.server.target
            if op == "sync":
                reply = target.control_sync(self._progress)
            elif op == "status":
                reply = target.control_status()
            elif op == "reload":
                reply = target.control_reload()
            else:
                reply = {"ok": False, "error": {"kind": "other", "message": f"unknown request {op!r}"}}
        except (ValueError, OSError) as exc:
            reply = {"ok": False, "error": {"kind": "other", "message": f"bad request: {exc}"}}
        except Exception as exc:
            log.exception("the control request failed")
            reply = error_reply(exc)
        self._send(reply)

    def _progress(self, message: str) -> None:
        self._send({"progress": message})

    def _send(self, reply: Reply) -> None:
        with contextlib.suppress(OSError):  # the command went away (Ctrl-C): nothing to tell
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False
    block_on_close = True  # stop() joins the request threads: no thread outlives the daemon

    def __init__(self, path: Path, target: ControlTarget) -> None:
        self.target = target
        super().__init__(str(path), _Handler)


class ControlServer:
    """The daemon's end: serves in its own thread from ``start()`` to ``stop()``."""

    def __init__(self, state_dir: Path, target: ControlTarget) -> None:
        self.path = socket_path(state_dir)
        self._target = target
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; a socket that cannot be made is logged, not fatal: the daemon mirrors without it (the commands
        then find no daemon)."""
        try:
            _private_dir(self.path.parent)
            # The caller holds the state directory's instance lock: a socket left here is a dead daemon's.
            self.path.unlink(missing_ok=True)
            # No umask change (it is process-wide, and the engine's threads already write files): the folder is
            # 0700, so nobody else can connect before the chmod.
            server = _Server(self.path, self._target)
        except (OSError, ConvsyncError) as exc:
            log.error(
                "no control socket (%s: %s): convsync sync, status and reload cannot reach this daemon. "
                "Fix: set XDG_RUNTIME_DIR to a short private folder of yours",
                self.path,
                exc,
            )
            return
        self._server = server
        self.path.chmod(0o600)
        self._thread = threading.Thread(target=server.serve_forever, name="convsync-control")
        self._thread.start()
        log.debug("control socket at %s", self.path)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._server.server_close()
        self._server = None
        self.path.unlink(missing_ok=True)


def request(state_dir: Path, op: str, progress: Progress | None = None, timeout: float = 10.0) -> Reply:
    """Send ``op`` to the daemon of ``state_dir``; its final reply. Raises ``NotRunning`` when none answers,
    ``TransientError`` when the exchange breaks (a daemon stopping, hung past ``timeout``, or garbled)."""
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:  # absent, a dead daemon's socket, or a folder we may not enter
            raise NotRunning(f"no convsync daemon runs with the state directory {state_dir}") from exc
        if _peer_uid(sock) != os.getuid():  # another user's socket (a planted /tmp folder): not our daemon
            raise NotRunning(f"{path} is served by another user, not by a convsync daemon of yours")
        try:
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            with sock.makefile("rb") as replies:
                for line in replies:
                    reply = json.loads(line)
                    if not isinstance(reply, dict):
                        raise ValueError(f"not a JSON object: {line[:80]!r}")
                    if "progress" in reply:
                        if progress is not None:
                            progress(str(reply["progress"]))
                        continue
                    return reply
        except (OSError, ValueError) as exc:
            raise TransientError(f"the daemon's control socket failed: {exc}") from exc
    finally:
        sock.close()
    raise TransientError("the daemon closed the control socket without an answer (it is stopping?)")


def raise_for(reply: Reply) -> None:
    """The error a failed reply stands for, as the command's own (so its exit code is the documented one)."""
    if reply.get("ok"):
        return
    error = reply.get("error") or {}
    message, kind = str(error.get("message", "the daemon failed the request")), error.get("kind")
    if kind == "tls":
        raise UntrustedCertificate(message)
    if kind == "redirect":
        raise RedirectRefused(message)
    if kind == "auth":
        raise AuthError(message)
    if kind == "transient":
        raise TransientError(message)
    if kind == "config":
        raise ConfigError([message])
    # An exception the daemon did not expect (exit 1, BUG): say so, as the command would for its own.
    raise ConvsyncError(f"the daemon failed the request (a bug; please report it, with its log): {message}")
