"""``convsync prompt [DIR]``: write a prompt in your editor and send it when the editor exits (the ``git commit``
flow), so that no editor ever holds text that was already sent (``docs/editors.md``).

The draft lives outside the mirror (a private temp folder): the editor's swap and backup files never land in
the conversation folder, and nothing is sent while you write. When the editor exits with a non-empty draft,
its text is renamed into ``prompt.txt`` in one step, which convsync takes as exactly one save.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from convsync.cli import Exit
from convsync.errors import ConfigError
from convsync.mirror.atomic import write_atomic
from convsync.mirror.folders import CONVERSATION_MARKER
from convsync.mirror.prompt import PROMPT, decode_prompt

TAKE_WAIT_SECONDS = 10.0  # how long the command waits for the daemon to take the prompt
_POLL_SECONDS = 0.1

Say = Callable[[str], None]


def editor_command() -> list[str]:
    """``$VISUAL``, else ``$EDITOR``, else ``vi``, split like a shell would (``code --wait`` works)."""
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


def run_prompt(directory: Path | None, *, say: Say = print, wait: float = TAKE_WAIT_SECONDS) -> int:
    folder = (directory or Path.cwd()).absolute()
    if not (folder / CONVERSATION_MARKER).is_file():
        raise ConfigError(
            [
                f"{folder} is not a conversation folder (it has no {CONVERSATION_MARKER} file). Fix: give the "
                "folder of a conversation, e.g. convsync prompt ~/Conversations/'Demo Agent'/'My chat'"
            ]
        )
    drafts = Path(tempfile.mkdtemp(prefix="convsync-prompt-"))
    draft = drafts / PROMPT
    draft.write_bytes(b"")
    keep = False
    try:
        done = subprocess.run([*editor_command(), str(draft)], check=False)  # the user's editor, as they set it
        raw = draft.read_bytes()
        text = decode_prompt(raw)
        if done.returncode != 0:
            say(f"convsync: the editor exited with status {done.returncode}: nothing sent")
            keep = bool(text)
            return Exit.BUG if keep else Exit.OK
        if text is None:
            say("convsync: the draft is not UTF-8 text: nothing sent")
            keep = True
            return Exit.USAGE
        if not text:
            say("convsync: the draft is empty: nothing sent")
            return Exit.OK
        prompt = folder / PROMPT
        if _holds_text(prompt):
            say(f"convsync: {prompt} still holds a prompt that was not sent yet; nothing was overwritten")
            keep = True
            return Exit.TRANSIENT
        write_atomic(prompt, raw.decode("utf-8-sig"))  # one rename: exactly one save
    finally:
        if keep:
            say(f"convsync: your draft is kept in {draft}")
        else:
            shutil.rmtree(drafts, ignore_errors=True)
    deadline = time.monotonic() + wait
    while _holds_text(prompt) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)  # a command waiting for a daemon: polling one small file is enough
    if _holds_text(prompt):
        say(f"convsync: saved into {prompt}; it is sent once convsync runs (no daemon took it within {wait:.0f} s)")
    else:
        say(f"convsync: sent; follow the reply with: tail -f {shlex.quote(str(folder / 'transcript.md'))}")
    return Exit.OK


def _holds_text(path: Path) -> bool:
    """Whether ``path`` holds a prompt (text, or bytes that are not text): anything but empty or blank."""
    try:
        text = decode_prompt(path.read_bytes())
    except FileNotFoundError:
        return False
    return text != ""
