"""Problems a person can act on: named by folder and route (no UUID paths), logged once, a real retry time."""

from __future__ import annotations

import logging
import re
import time

import pytest

from convsync.emulator import FaultRule
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def failing_sends(mirror: Mirror) -> None:
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=503)])


def test_a_problem_names_the_route_not_the_ids(mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    """errors.log, status and the log lines say `POST stream` and the folder, never the agent's or the
    conversation's id."""
    caplog.set_level(logging.INFO, logger="convsync")
    folder, cid = chat(mirror)
    failing_sends(mirror)
    (folder / "prompt.txt").write_text("hello")
    wait_until((folder / "errors.log").is_file, 15, what="errors.log")
    errors = (folder / "errors.log").read_text()
    assert "POST stream:" in errors
    status = (folder / "status").read_text()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("Demo Agent/Chat: ") and "POST stream:" in w for w in warnings)
    for text in (errors, status, *warnings):
        assert cid not in text
        assert mirror.aid not in text


def test_a_repeated_problem_is_logged_once_and_its_end_once(mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    """Three failed attempts log one warning; when sends work again one info line says so."""
    caplog.set_level(logging.INFO, logger="convsync")
    folder, _ = chat(mirror)
    failing_sends(mirror)
    (folder / "prompt.txt").write_text("hello")

    def attempts() -> int:
        return sum(1 for r in mirror.emu.requests if r.method == "POST" and r.path.endswith("/stream"))

    wait_until(lambda: attempts() >= 3, 30, what="three attempts")
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and "Demo Agent/Chat: " in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    mirror.emu.set_faults([])
    wait_until(
        lambda: any("Demo Agent/Chat: working again" in r.getMessage() for r in caplog.records), 30, what="the end"
    )


def test_status_shows_when_the_next_attempt_is(mirror: Mirror) -> None:
    """While sends fail, status names the UTC time of the next attempt, a time in the near future."""
    folder, _ = chat(mirror)
    failing_sends(mirror)
    (folder / "prompt.txt").write_text("hello")
    line = wait_until(
        lambda: re.search(r"next try at (\d\d):(\d\d):(\d\d)Z", (folder / "status").read_text()), 15, what="status"
    )
    h, m, s = (int(g) for g in line.groups())
    now = time.gmtime()
    ahead = (h * 3600 + m * 60 + s - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)) % 86400
    assert 0 <= ahead <= 120


def test_an_outage_is_logged_once_by_the_lists_pass(mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    """While every request fails, the lists pass logs its problem once however often it runs; its end once."""
    caplog.set_level(logging.INFO, logger="convsync")
    folder, _ = chat(mirror)
    mirror.emu.set_faults([FaultRule(status=503)])
    (folder / "prompt.txt").write_text("hello")

    def lists() -> int:
        return sum(1 for r in mirror.emu.requests if r.method == "GET" and r.path.endswith("/agents"))

    def conversation_reads() -> int:
        return sum(1 for r in mirror.emu.requests if r.method == "GET" and r.path.endswith("/messages"))

    start, reads = lists(), conversation_reads()
    # Lists passes and the conversation's own failed reads interleave (both report the server's problem).
    wait_until(
        lambda: lists() >= start + 6 and conversation_reads() >= reads + 3, 30, what="failed passes of both kinds"
    )
    mirror.emu.set_faults([])
    wait_until(lambda: any("the server answers again" in r.getMessage() for r in caplog.records), 30, what="the end")
    listed = [r for r in caplog.records if r.levelno == logging.WARNING and "GET /tenants/" in r.getMessage()]
    assert len(listed) == 1, [r.getMessage() for r in listed]
