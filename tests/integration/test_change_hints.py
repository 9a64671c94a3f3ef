"""Change hints end to end: a list with ``updated_at`` brings a remote message at once; a lying one is dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.integration.conftest import Mirror
from tests.waiting import wait_until

SLOW = 300.0  # message polls far slower than any wait of these tests


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    hints = getattr(request, "param", "on")
    options = EmulatorOptions(api_key="s4w_test-key", chunk_delay=0.0, list_updated_at=hints)
    with EmulatorServer(options) as emu:
        yield emu


def elsewhere(mirror: Mirror, text: str) -> tuple[str, Path]:
    """A conversation made and written in elsewhere, once its first message is mirrored: (id, transcript)."""
    cid = mirror.emu.create_conversation(mirror.aid, "Elsewhere")
    mirror.emu.inject_message(cid, text, role="user")
    transcript = mirror.wait_folder_of(cid) / "transcript.md"
    wait_until(lambda: transcript.is_file() and text in transcript.read_text(), 10, what="the first message")
    return cid, transcript


def list_requests(mirror: Mirror) -> int:
    return sum(1 for r in mirror.emu.requests if r.method == "GET" and r.path.endswith("/conversations"))


def more_lists_passes(mirror: Mirror, n: int) -> None:
    passes = list_requests(mirror)
    wait_until(lambda: list_requests(mirror) >= passes + n, 10, what=f"{n} more lists passes")


def wait_text(transcript: Path, text: str, timeout: float) -> None:
    wait_until(lambda: text in transcript.read_text(), timeout, what=f"{text!r} in {transcript}")


def test_a_change_the_list_announces_is_read_at_once(mirror: Mirror) -> None:
    """With ``updated_at`` in the list, a message added elsewhere is mirrored long before any message poll."""
    mirror.stop()
    mirror.start(poll_idle_seconds=SLOW, poll_active_seconds=SLOW)
    cid, transcript = elsewhere(mirror, "the first question")
    mirror.emu.inject_message(cid, "an answer written elsewhere")
    wait_text(transcript, "an answer written elsewhere", 10)


@pytest.mark.parametrize("emulator", ["off"], indirect=True)
def test_without_updated_at_the_poll_policy_decides(mirror: Mirror) -> None:
    """Without ``updated_at`` the lists passes read no conversation: a remote message waits for its poll."""
    mirror.stop()
    mirror.start(poll_idle_seconds=SLOW, poll_active_seconds=SLOW)
    cid, transcript = elsewhere(mirror, "the first question")
    mirror.emu.inject_message(cid, "an answer written elsewhere")
    more_lists_passes(mirror, 4)
    assert "an answer written elsewhere" not in transcript.read_text()


@pytest.mark.parametrize("emulator", ["stale"], indirect=True)
def test_a_list_that_does_not_announce_news_is_distrusted_once(
    mirror: Mirror, caplog: pytest.LogCaptureFixture
) -> None:
    """A list whose ``updated_at`` stays put while polls find new messages is logged once as untrusted."""
    caplog.set_level(logging.INFO, logger="convsync")
    mirror.stop()
    mirror.start(poll_idle_seconds=1.0, poll_active_seconds=1.0)
    cid, transcript = elsewhere(mirror, "the first question")

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.WARNING and "no longer trusts" in r.getMessage()]

    for n in range(3):
        mirror.emu.inject_message(cid, f"unannounced {n}")
        wait_text(transcript, f"unannounced {n}", 15)
        more_lists_passes(mirror, 3)
    assert len(warnings()) == 1
