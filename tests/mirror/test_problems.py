"""The problems shown in STATUS=, without threads: the root's first, an outage logged once and its end."""

from __future__ import annotations

import logging

import pytest

from convsync.errors import AuthError, TransientError
from convsync.mirror.problems import Problems


def test_the_roots_problem_is_shown_before_any_other() -> None:
    """With a server and a root problem, STATUS= shows the root's."""
    problems = Problems()
    problems.set("server", "the server cannot be reached")
    problems.set("root", "the mirror root is gone")
    assert problems.shown() == "the mirror root is gone"
    problems.set("root", None)
    assert problems.shown() == "the server cannot be reached"


def test_an_outage_of_the_lists_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Three failed lists passes with the same error log one warning; the answer again logs its end once."""
    caplog.set_level(logging.INFO, logger="convsync.mirror.problems")
    problems = Problems()
    for _ in range(3):
        problems.lists_failed(TransientError("GET agents: connection refused"))
    assert problems.lists_answered() is True
    assert problems.lists_answered() is False
    assert [r.getMessage() for r in caplog.records] == [
        "the server cannot be reached or failed: GET agents: connection refused",
        "the server answers again",
    ]
    assert problems.shown() is None


def test_a_refused_key_is_said_so() -> None:
    """A lists pass refused with 401 shows that the server refused the API key."""
    problems = Problems()
    problems.lists_failed(AuthError("GET agents: 401"))
    assert problems.get("server") == "the server refused the API key: GET agents: 401"


def test_a_conversations_transient_failure_puts_the_server_in_trouble() -> None:
    """A reconcile's transient failure is the server's problem, without request ids, until the lists answer."""
    problems = Problems()
    problems.conversation_failed(TransientError("GET /api/v2/agents/a1/conversations/c1/messages: 503"), None)
    assert problems.get("server") == "the server cannot be reached or failed: GET messages: 503"
    assert problems.lists_answered() is True and "server" not in problems
