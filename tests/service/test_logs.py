"""Logging: <N> priorities, no time under journald; a timed line elsewhere; -v/-q; redaction."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from convsync.logs import register_secret, set_level, setup_logging

log = logging.getLogger("convsync.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the root logger as it was: setup_logging installs a handler on it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def stderr_file(tmp_path: Path) -> Iterator[TextIO]:
    """A real file as the log stream, so its device and inode can be announced in $JOURNAL_STREAM."""
    with (tmp_path / "stderr").open("w+") as stream:
        yield stream


def output(stream: TextIO) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()


def announce_journal(stream: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    info = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")


def test_journald_lines_carry_priority_and_no_time(stderr_file: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """With stderr announced in $JOURNAL_STREAM, lines are `<N>logger: message` with the syslog priority N."""
    announce_journal(stderr_file, monkeypatch)
    setup_logging(stream=stderr_file)

    log.info("started")
    log.warning("slow")
    log.error("failed")

    assert output(stderr_file).splitlines() == [
        "<6>convsync.test: started",
        "<4>convsync.test: slow",
        "<3>convsync.test: failed",
    ]


def test_journald_traceback_lines_keep_the_priority(stderr_file: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line of a multi-line record (a traceback) starts with the record's priority."""
    announce_journal(stderr_file, monkeypatch)
    setup_logging(stream=stderr_file)

    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it broke")

    lines = output(stderr_file).splitlines()
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_console_lines_have_time_and_level(stderr_file: TextIO) -> None:
    """Outside journald a line reads `YYYY-MM-DD HH:MM:SS LEVEL logger: message`."""
    setup_logging(stream=stderr_file)

    log.warning("hello")

    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING convsync.test: hello\n", output(stderr_file))


def test_foreign_journal_stream_is_not_ours(stderr_file: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """A $JOURNAL_STREAM naming another file (inherited, stderr redirected) keeps the console format."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    setup_logging(stream=stderr_file)

    log.warning("hello")

    assert not output(stderr_file).startswith("<")


def test_config_level_applies(stderr_file: TextIO) -> None:
    """log_level: warning hides info records."""
    setup_logging(level="warning", stream=stderr_file)

    log.info("hidden")
    log.warning("shown")

    assert "hidden" not in output(stderr_file)
    assert "shown" in output(stderr_file)


def test_verbose_and_quiet_shift_the_level(stderr_file: TextIO) -> None:
    """-v makes info into debug; -q makes it warning."""
    setup_logging(verbosity=1, level="info", stream=stderr_file)
    log.debug("debug with -v")
    setup_logging(verbosity=-1, level="info", stream=stderr_file)
    log.info("info with -q")

    text = output(stderr_file)
    assert "debug with -v" in text
    assert "info with -q" not in text


def test_setup_twice_installs_one_handler(stderr_file: TextIO) -> None:
    """The CLI calls setup_logging twice (before and after the config); a record is still written once."""
    setup_logging(verbosity=0, stream=stderr_file)
    setup_logging(verbosity=0, level="info", stream=stderr_file)

    log.warning("once")

    assert output(stderr_file).count("once") == 1


def test_reload_level_keeps_the_verbosity(stderr_file: TextIO) -> None:
    """set_level (a config reload) keeps the -v shift: warning with -v shows info."""
    setup_logging(verbosity=1, level="info", stream=stderr_file)
    set_level("warning")

    log.info("info at warning -v")
    log.debug("debug at warning -v")

    assert "info at warning -v" in output(stderr_file)
    assert "debug at warning -v" not in output(stderr_file)


def test_registered_secret_is_redacted(stderr_file: TextIO) -> None:
    """A registered secret never reaches the output, whether in the message or in its arguments."""
    setup_logging(stream=stderr_file)
    register_secret("plain-secret-value-123")

    log.warning("key plain-secret-value-123 and %s", "plain-secret-value-123")

    text = output(stderr_file)
    assert "plain-secret-value-123" not in text
    assert "key [redacted] and [redacted]" in text


def test_bearer_tokens_and_api_keys_are_redacted(stderr_file: TextIO) -> None:
    """Anything shaped like `Bearer …` or an `s4w_…` key is redacted even if nobody registered it."""
    setup_logging(stream=stderr_file)

    log.warning("headers: {'Authorization': 'Bearer abc.def-123'} key=s4w_unregistered-key")

    text = output(stderr_file)
    assert "abc.def-123" not in text
    assert "s4w_unregistered" not in text
    assert "Bearer [redacted]" in text


def test_secret_in_a_traceback_is_redacted(stderr_file: TextIO) -> None:
    """An exception message quoting the key is redacted in the logged traceback too."""
    setup_logging(stream=stderr_file)
    register_secret("traceback-secret-456")

    try:
        raise RuntimeError("request with traceback-secret-456 failed")
    except RuntimeError:
        log.exception("failure")

    text = output(stderr_file)
    assert "traceback-secret-456" not in text
    assert "RuntimeError: request with [redacted] failed" in text


def test_noisy_libraries_are_quiet_by_default(stderr_file: TextIO) -> None:
    """httpx's per-request INFO lines show only from -vv on."""
    setup_logging(verbosity=1, stream=stderr_file)
    logging.getLogger("httpx").info("HTTP Request: GET /agents")
    setup_logging(verbosity=2, stream=stderr_file)
    logging.getLogger("httpx").info("HTTP Request: GET /again")

    text = output(stderr_file)
    assert "/agents" not in text
    assert "/again" in text
