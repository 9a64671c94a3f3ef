"""sd_notify without a dependency: one datagram per notification to ``$NOTIFY_SOCKET``.

The protocol (sd_notify(3)): newline-separated ``KEY=value`` assignments in one ``AF_UNIX`` datagram; a socket
path starting with ``@`` is in the abstract namespace. Without ``$NOTIFY_SOCKET`` (not started by systemd, or
``NotifyAccess`` does not include us) every call is a silent no-op, and a failed send is logged, never raised:
notifications must not take the daemon down. A send waits at most ``SEND_TIMEOUT_SECONDS``: a datagram socket's
queue is short (``net.unix.max_dgram_qlen``, often 10), and a listener that stopped reading must not stall
the daemon's main loop (and with it, its reaction to SIGTERM).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 0.5


class Notifier:
    """Sends service-manager notifications; reads ``$NOTIFY_SOCKET``/``$WATCHDOG_*`` once, at construction."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``$NOTIFY_SOCKET`` names a usable socket)."""
        return self._address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True when it was sent."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_SECONDS)
                sock.connect(self._address)
                sock.sendall(payload)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self._address, exc)
            return False
        return True

    def ready(self) -> bool:
        """``READY=1``: startup (the first full scan) or a reload finished."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.send("STATUS=" + " ".join(text.split()))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: we are alive (send only while healthy)."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd uses to pair it with the next ``READY=1``."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown began."""
        return self.send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None without a watchdog.

        ``$WATCHDOG_PID``, when set, must be our pid: the variables may have leaked from a parent.
        """
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000


def _socket_address(value: str) -> str | None:
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # unset, or a transport we do not speak (e.g. vsock:)
