"""A real ``$NOTIFY_SOCKET`` for the service tests: an AF_UNIX datagram socket that records what arrives."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_until


class NotifyListener:
    """Receives sd_notify datagrams; no thread: ``messages`` drains the socket each time it is read."""

    def __init__(self, *, abstract: bool = False) -> None:
        self._dir: Path | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"convsync-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # A short path: AF_UNIX addresses are limited to 107 bytes, pytest's tmp_path can be longer.
            self._dir = Path(tempfile.mkdtemp(prefix="cs-notify-"))
            path = self._dir / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.setblocking(False)
        self._received: list[str] = []

    @property
    def messages(self) -> list[str]:
        while True:
            try:
                self._received.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return list(self._received)

    def lines(self) -> list[str]:
        """Every ``KEY=value`` line received so far, in order."""
        return [line for message in self.messages for line in message.split("\n")]

    def count(self, line: str) -> int:
        return sum(1 for got in self.lines() if got == line)

    def wait_for(self, predicate_line: str, times: int = 1, timeout: float = 30.0) -> list[str]:
        """Wait until the line (exact, or a prefix ending in '=') came ``times`` times; return all lines."""

        def arrived() -> list[str] | None:
            lines = self.lines()
            if predicate_line.endswith("="):
                hits = sum(1 for got in lines if got.startswith(predicate_line))
            else:
                hits = sum(1 for got in lines if got == predicate_line)
            return lines if hits >= times else None

        result = wait_until(arrived, timeout=timeout, what=f"{times}x {predicate_line!r} on the notify socket")
        assert result is not None
        return result

    def wait_for_exit(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
        """Wait for ``proc`` to exit while reading the socket (a full datagram queue would stall its sender)."""

        def exited() -> bool:
            self.lines()
            return proc.poll() is not None

        with contextlib.suppress(AssertionError):
            wait_until(exited, timeout=timeout, what="the daemon to exit")
        self.lines()
        return proc.poll()

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()
