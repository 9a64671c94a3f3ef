"""Logging to stderr: journald-aware, level from the config shifted by ``-v``/``-q``, secrets redacted.

Under systemd with ``StandardError=journal`` (``$JOURNAL_STREAM`` names our stderr) each line starts with a
``<N>`` syslog priority and carries no timestamp (the journal adds its own); anywhere else lines read
``2024-05-01 12:00:00 INFO    convsync.daemon: message``.

Every record passes a filter that replaces registered secrets (the API key), ``Bearer …`` tokens and anything
shaped like an API key (``s4w_…``) with ``[redacted]``, in the message, its arguments and any traceback, and
writes control characters as escapes (a message is one line; a traceback keeps its line breaks only).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import TextIO

from convsync.printable import printable, printable_lines

REDACTED = "[redacted]"
LEVEL_NAMES = ("debug", "info", "warning", "error", "critical")
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
# Libraries that are chatty at INFO/DEBUG (httpx logs every request); shown only from -vv on.
_NOISY_LOGGERS = ("httpx", "httpcore", "watchdog", "asyncio", "uvicorn", "uvicorn.access")
# syslog priorities, as journald reads them from a "<N>" line prefix.
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

# A key is "s4w_" and its value: the bare word (a server's hint: 'Expected key starting with "s4w_"') stays.
_TOKEN_PATTERN = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+|\bs4w_[^\s'\",;]+")
_MIN_SECRET_LENGTH = 4  # a shorter "secret" would redact ordinary words


class _Secrets:
    lock = threading.Lock()
    values: frozenset[str] = frozenset()  # replaced whole, so readers need no lock


def register_secret(value: str) -> None:
    """Redact ``value`` (e.g. the API key) from every log record from now on."""
    value = value.strip()
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _Secrets.lock:
        _Secrets.values = _Secrets.values | {value}


def redact(text: str) -> str:
    """``text`` with every registered secret, ``Bearer`` token and ``s4w_`` key replaced by ``[redacted]``."""
    for secret in sorted(_Secrets.values, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _TOKEN_PATTERN.sub(lambda m: (m.group(1) or "") + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Renders each record's message (and traceback) once and redacts it before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = printable(redact(message))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = printable_lines(redact(record.exc_text))
        if record.stack_info:
            record.stack_info = printable_lines(redact(record.stack_info))
        return True


class JournaldFormatter(logging.Formatter):
    """``<N>logger: message``, every line prefixed so a traceback keeps the record's priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


class ConsoleFormatter(logging.Formatter):
    """A readable line with local time, level and logger name."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd announced in ``$JOURNAL_STREAM`` (``dev:inode``)."""
    announced = os.environ.get("JOURNAL_STREAM", "")
    if not announced:
        return False
    try:
        device, inode = (int(part) for part in announced.split(":", 1))
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


class _State:
    handler: logging.StreamHandler[TextIO] | None = None
    base_level: str = "info"
    verbosity: int = 0


def _effective_level(base: str, verbosity: int) -> int:
    index = LEVEL_NAMES.index(base) - verbosity
    return _LEVELS[max(0, min(len(_LEVELS) - 1, index))]


def setup_logging(verbosity: int = 0, level: str | None = None, *, stream: TextIO | None = None) -> None:
    """Log to stderr at ``level`` (one of ``LEVEL_NAMES``; default: as before, else info) shifted by -v/-q.

    Each ``-v`` is one step more verbose, each ``-q`` one step less. Calling it again reconfigures the same
    handler (the CLI calls it once before and once after reading the config). ``stream``: default stderr.
    """
    if level is not None:
        name = level.strip().lower()
        _State.base_level = name if name in LEVEL_NAMES else "info"
    _State.verbosity = verbosity

    stream = stream or sys.stderr
    handler = _State.handler
    root = logging.getLogger()
    if handler is None or handler not in root.handlers:
        handler = logging.StreamHandler(stream)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
        _State.handler = handler
    else:
        handler.setStream(stream)
    handler.setFormatter(JournaldFormatter() if under_journald(stream) else ConsoleFormatter())
    _apply_levels()


def set_level(level: str) -> None:
    """Change the configured level (on a config reload), keeping the ``-v``/``-q`` shift."""
    name = level.strip().lower()
    if name in LEVEL_NAMES:
        _State.base_level = name
    _apply_levels()


def _apply_levels() -> None:
    logging.getLogger().setLevel(_effective_level(_State.base_level, _State.verbosity))
    noisy_level = logging.NOTSET if _State.verbosity >= 2 else logging.WARNING
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(noisy_level)
