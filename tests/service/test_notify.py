"""sd_notify: one datagram per notification to $NOTIFY_SOCKET (path or abstract), silent without one."""

from __future__ import annotations

import os
import time

import pytest

from convsync.notify import SEND_TIMEOUT_SECONDS, Notifier
from tests.service.conftest import NotifyListener


def test_ready_is_one_datagram(notify_socket: NotifyListener) -> None:
    """ready() sends exactly the datagram READY=1."""
    assert Notifier({"NOTIFY_SOCKET": notify_socket.address}).ready()

    assert notify_socket.messages == ["READY=1"]


def test_abstract_socket_address() -> None:
    """A $NOTIFY_SOCKET starting with @ is an abstract socket name."""
    listener = NotifyListener(abstract=True)
    try:
        Notifier({"NOTIFY_SOCKET": listener.address}).stopping()

        assert listener.messages == ["STOPPING=1"]
    finally:
        listener.close()


def test_status_is_a_single_line(notify_socket: NotifyListener) -> None:
    """status() flattens line breaks so the summary stays one STATUS= line."""
    Notifier({"NOTIFY_SOCKET": notify_socket.address}).status("3 conversations\nlast error: boom")

    assert notify_socket.messages == ["STATUS=3 conversations last error: boom"]


def test_watchdog_ping(notify_socket: NotifyListener) -> None:
    """watchdog() sends WATCHDOG=1."""
    Notifier({"NOTIFY_SOCKET": notify_socket.address}).watchdog()

    assert notify_socket.messages == ["WATCHDOG=1"]


def test_reloading_carries_the_monotonic_time(notify_socket: NotifyListener) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC= read from CLOCK_MONOTONIC when sending."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier({"NOTIFY_SOCKET": notify_socket.address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    (message,) = notify_socket.messages
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert before <= int(second.removeprefix("MONOTONIC_USEC=")) <= after


def test_without_socket_every_call_is_a_silent_no_op() -> None:
    """Without $NOTIFY_SOCKET nothing is sent and nothing is raised."""
    notifier = Notifier({})

    assert not notifier.enabled
    assert not any([notifier.ready(), notifier.status("x"), notifier.watchdog(), notifier.stopping()])
    assert notifier.watchdog_interval() is None


def test_unreachable_socket_is_not_an_error(tmp_path: object) -> None:
    """A $NOTIFY_SOCKET nobody listens on makes sends return False instead of raising."""
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})

    assert notifier.enabled
    assert notifier.ready() is False


def test_a_listener_that_stopped_reading_does_not_stall_the_sender(notify_socket: NotifyListener) -> None:
    """Once the receiver's datagram queue is full a send gives up after a short timeout instead of blocking."""
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    for _ in range(10_000):  # fill the queue (net.unix.max_dgram_qlen datagrams, or the buffer)
        started = time.monotonic()
        if not notifier.status("filling"):
            break
    else:
        pytest.fail("the queue never filled up")

    assert time.monotonic() - started < SEND_TIMEOUT_SECONDS + 0.5
    assert notify_socket.messages  # the queued ones are still there to read


def test_unsupported_address_is_ignored() -> None:
    """A relative path or a vsock: address is not ours to use."""
    assert not Notifier({"NOTIFY_SOCKET": "relative.sock"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=3000000 (3 s) means a ping every 1.5 s."""
    assert Notifier({"WATCHDOG_USEC": "3000000"}).watchdog_interval() == 1.5


def test_watchdog_for_another_pid_is_ignored() -> None:
    """A WATCHDOG_PID that is not ours means the watchdog is meant for another process."""
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 1.5


def test_invalid_watchdog_usec_disables_the_watchdog() -> None:
    """An unparsable or zero WATCHDOG_USEC disables pings."""
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
