"""The control socket's client side: errors keep their exit codes across it; only a daemon of this uid is trusted."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from convsync import control
from convsync.cli import Exit, exit_code_for
from convsync.errors import (
    ApiError,
    AuthError,
    ConvsyncError,
    NotRunning,
    RedirectRefused,
    TransientError,
    UntrustedCertificate,
)
from tests.waiting import wait_until


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UntrustedCertificate("certificate verify failed"), Exit.TLS_UNTRUSTED),
        (RedirectRefused("redirected to https://elsewhere/"), Exit.CONFIG),
        (AuthError("bad key", status=401), Exit.AUTH),
        (TransientError("connection refused"), Exit.TRANSIENT),
        (ApiError("server error", status=500), Exit.TRANSIENT),
    ],
)
def test_an_error_keeps_its_exit_code_across_the_socket(error: ConvsyncError, code: Exit) -> None:
    """error_reply then raise_for gives an error with the same exit code as the original."""
    with pytest.raises(ConvsyncError) as raised:
        control.raise_for(control.error_reply(error))
    assert exit_code_for(raised.value) == code
    assert str(error) in str(raised.value)


class _Target:
    def control_sync(self, progress: control.Progress) -> control.Reply:
        return {"ok": True, "summary": "planted"}

    def control_status(self) -> control.Reply:
        return {"ok": True, "summary": "planted"}

    def control_reload(self) -> control.Reply:
        return {"ok": True}


def test_a_socket_of_another_user_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose uid differs from the socket's server treats it as no daemon of its own (NotRunning)."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    server = control.ControlServer(tmp_path / "state", _Target())
    server.start()
    try:
        real_uid = os.getuid()
        monkeypatch.setattr(control.os, "getuid", lambda: real_uid + 1)  # this command runs as someone else
        with pytest.raises(NotRunning, match="another user"):
            control.request(tmp_path / "state", "sync")
    finally:
        monkeypatch.undo()
        server.stop()


def test_a_garbled_answer_is_a_transient_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that answers something other than JSON lines makes the command fail with TransientError (exit
    75), not a ValueError reported as a bug."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    path = control.socket_path(tmp_path / "state")
    path.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        with pytest.raises(TransientError, match="control socket failed"):
            control.request(tmp_path / "state", "sync", timeout=10)
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive()


def test_without_xdg_runtime_dir_the_users_run_folder_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command without $XDG_RUNTIME_DIR (cron, su) looks in /run/user/<uid>, where the service's socket is."""
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(control, "SYSTEMD_RUNTIME_BASE", tmp_path)
    (tmp_path / str(os.getuid())).mkdir(mode=0o700)
    assert control.runtime_dir() == tmp_path / str(os.getuid()) / "convsync"


def test_without_any_runtime_dir_a_private_temp_folder_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No $XDG_RUNTIME_DIR and no /run/user/<uid>: the socket's folder is <tmp>/convsync-<uid>."""
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(control, "SYSTEMD_RUNTIME_BASE", tmp_path / "absent")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(control.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert control.runtime_dir() == tmp_path / f"convsync-{os.getuid()}"


def test_a_silent_client_does_not_hold_up_the_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that connects and never sends its request line is dropped after the read timeout, so the
    daemon's stop (which joins the request threads) returns."""
    monkeypatch.setattr(control, "READ_TIMEOUT_SECONDS", 0.5)
    server = control.ControlServer(tmp_path / "state", _Target())
    server.start()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(server.path))
    wait_until(
        lambda: any("process_request" in t.name for t in threading.enumerate()),
        timeout=10,
        what="the daemon to take the connection",
    )
    stopper = threading.Thread(target=server.stop)
    try:
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive()
    finally:
        silent.close()
        stopper.join(timeout=10)


def test_a_socket_path_too_long_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A runtime dir whose socket path exceeds AF_UNIX's limit: start() logs the fix and returns (the daemon
    mirrors on); a command then finds no daemon (NotRunning), not an OSError reported as a bug."""
    runtime = tmp_path / ("x" * 120)
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    server = control.ControlServer(tmp_path / "state", _Target())
    server.start()
    try:
        assert "no control socket" in caplog.text
        assert "XDG_RUNTIME_DIR" in caplog.text
        with pytest.raises(NotRunning):
            control.request(tmp_path / "state", "status")
    finally:
        server.stop()


def test_an_unexpected_daemon_error_is_reported_as_a_bug() -> None:
    """A reply of kind `other` (an exception the daemon did not expect) exits 1 and says it is a bug."""
    with pytest.raises(ConvsyncError) as raised:
        control.raise_for(control.error_reply(ZeroDivisionError("division by zero")))
    assert exit_code_for(raised.value) == Exit.BUG
    assert "a bug" in str(raised.value)
    assert "division by zero" in str(raised.value)
