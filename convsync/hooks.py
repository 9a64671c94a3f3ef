"""Done-hooks: the ``on_reply`` command of the config, run when a reply finishes (or fails).

The command is an argv list, run without a shell, so nothing in a reply or a name can become shell syntax.
``{folder}``, ``{agent}``, ``{conversation}``, ``{reply}`` and ``{status}`` inside its items are replaced by
those values (each item stays one argument), and the same values are in its environment as
``CONVSYNC_FOLDER``, ``CONVSYNC_AGENT``, ``CONVSYNC_CONVERSATION``, ``CONVSYNC_REPLY`` (the reply's first line)
and ``CONVSYNC_STATUS`` (``ok`` or ``failed``). It runs on a thread of its own with a time limit: a hook that
hangs is killed after ``HOOK_TIMEOUT_SECONDS``, one that fails is logged, and neither ever holds up the daemon.
The API key is not in its environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

HOOK_TIMEOUT_SECONDS = 30.0
FIRST_LINE_LIMIT = 200  # characters of the reply's first line handed to the hook
_OUTPUT_LIMIT = 4096  # bytes of the hook's output kept for the log


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """What a hook is told about a finished reply."""

    folder: str
    agent: str
    conversation: str
    reply: str  # its first line
    status: str  # "ok" | "failed"

    def values(self) -> dict[str, str]:
        return {
            "folder": self.folder,
            "agent": self.agent,
            "conversation": self.conversation,
            "reply": self.reply,
            "status": self.status,
        }


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:FIRST_LINE_LIMIT]
    return ""


_PLACEHOLDER = re.compile(r"\{(folder|agent|conversation|reply|status)\}")


def command_for(argv: Sequence[str], done: ReplyDone) -> list[str]:
    """``argv`` with each ``{name}`` replaced, in one pass (braces inside the values stay as they are)."""
    values = done.values()
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], item) for item in argv]


def environment(done: ReplyDone, secret: str) -> dict[str, str]:
    """The daemon's environment without any variable holding ``secret`` (the API key), plus the hook's."""
    env = {k: v for k, v in os.environ.items() if not secret or secret not in v}
    env.update({f"CONVSYNC_{name.upper()}": value for name, value in done.values().items()})
    return env


def run_on_reply(
    argv: Sequence[str], done: ReplyDone, *, secret: str = "", timeout: float = HOOK_TIMEOUT_SECONDS
) -> threading.Thread | None:
    """Start the hook on a thread of its own and return that thread (``None`` when no hook is configured)."""
    if not argv:
        return None
    thread = threading.Thread(
        target=_run,
        args=(command_for(argv, done), environment(done, secret), timeout),
        name="convsync-hook",
        daemon=True,
    )
    thread.start()
    return thread


def _run(command: list[str], env: dict[str, str], timeout: float) -> None:
    name = command[0]
    try:
        proc = subprocess.Popen(  # the user's configured command, no shell
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, so that the time limit ends its children too
        )
    except OSError as exc:
        log.warning("on_reply: cannot run %s: %s (fix: check the on_reply command in the config)", name, exc)
        return
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The whole group: a child left in the background holds the output pipe, and reading it to its end
        # would wait for that child however long it lives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        log.warning("on_reply: %s did not finish within %g s and was killed", name, timeout)
        return
    text = output[:_OUTPUT_LIMIT].decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        log.warning("on_reply: %s exited with status %d%s", name, proc.returncode, f": {text}" if text else "")
    else:
        log.debug("on_reply: %s done%s", name, f": {text}" if text else "")
