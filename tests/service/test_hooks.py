"""The on_reply hook: an argv list run without a shell, told about the reply, bounded in time, never blocking."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from convsync.config import load_config
from convsync.errors import ConfigError
from convsync.hooks import ReplyDone, command_for, environment, run_on_reply

DONE = ReplyDone("/r/Demo Agent/Chat", "Demo Agent", "Chat {reply}", "You said: hi; rm -rf ~", "ok")


def test_placeholders_become_whole_arguments_in_one_pass() -> None:
    """{conversation} and {reply} fill one argument each; braces inside a value are not expanded again."""
    argv = command_for(["notify-send", "{conversation}", "{reply}", "{status}!"], DONE)
    assert argv == ["notify-send", "Chat {reply}", "You said: hi; rm -rf ~", "ok!"]


def test_the_hook_environment_has_the_reply_and_not_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVSYNC_* variables describe the reply; a variable holding the API key is left out."""
    monkeypatch.setenv("CONVSYNC_API_KEY", "s4w_secret")
    env = environment(DONE, "s4w_secret")
    assert "CONVSYNC_API_KEY" not in env
    assert (env["CONVSYNC_CONVERSATION"], env["CONVSYNC_REPLY"], env["CONVSYNC_STATUS"]) == (
        "Chat {reply}",
        "You said: hi; rm -rf ~",
        "ok",
    )


def test_a_hung_hook_is_killed_after_its_time_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that never ends is killed at the time limit; the caller never waited for it."""
    caplog.set_level(logging.WARNING, logger="convsync.hooks")
    thread = run_on_reply([sys.executable, "-c", "import time; time.sleep(60)"], DONE, timeout=0.5)
    assert thread is not None and thread.is_alive()  # started, not waited for (it ends only when killed)
    thread.join(10)
    assert not thread.is_alive()
    assert "did not finish within 0.5 s and was killed" in caplog.text


def test_a_hook_whose_child_keeps_its_output_open_is_killed_with_it(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that leaves a background child holding its output is ended at the time limit, child included."""
    caplog.set_level(logging.WARNING, logger="convsync.hooks")
    child = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    thread = run_on_reply([sys.executable, "-c", child + "; import time; time.sleep(60)"], DONE, timeout=0.5)
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert "was killed" in caplog.text


def test_a_failing_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A hook exiting non-zero leaves a warning with its status and output."""
    caplog.set_level(logging.WARNING, logger="convsync.hooks")
    thread = run_on_reply([sys.executable, "-c", "import sys; print('no display'); sys.exit(3)"], DONE)
    assert thread is not None
    thread.join(10)
    assert "exited with status 3: no display" in caplog.text


def test_on_reply_must_be_a_list(tmp_path: Path) -> None:
    """A shell string is refused with the list form as the fix (no shell is ever used)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: http://127.0.0.1:1/api/v2\nroot: {tmp_path}\non_reply: notify-send done\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, require_key=False)
    assert "on_reply" in str(raised.value) and "one item per argument" in str(raised.value)
