"""The on_reply hook with the real engine: run after a reply with its first line, never holding up prompts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Mirror
from tests.waiting import wait_until


@pytest.fixture
def hooked(mirror: Mirror, tmp_path: Path) -> Iterator[tuple[Mirror, Path]]:
    out = tmp_path / "hook-calls.jsonl"
    script = (
        "import json, os, sys; "
        f"open({str(out)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], "
        "'reply': os.environ['CONVSYNC_REPLY'], 'status': os.environ['CONVSYNC_STATUS']}) + '\\n')"
    )
    mirror.stop()
    mirror.start(on_reply=(sys.executable, "-c", script, "{conversation}", "{agent}"))
    yield mirror, out


def test_a_finished_reply_runs_the_hook_with_its_first_line(hooked: tuple[Mirror, Path]) -> None:
    """After a reply the hook runs once with the conversation, the agent and the reply's first line."""
    mirror, out = hooked
    folder = mirror.agent_dir / "Hooked"
    folder.mkdir()
    mirror.bound(folder)
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("hello hook")
    wait_until(out.exists, 15, what="the hook to run")
    wait_until(lambda: out.read_text().endswith("\n"), 5, what="the hook's line")
    [call] = [json.loads(line) for line in out.read_text().splitlines()]
    assert call == {"argv": ["Hooked", "Demo Agent"], "reply": "You said: hello hook", "status": "ok"}


# A hung hook is killed after HOOK_TIMEOUT_SECONDS, not when the engine stops (stop never waits for a hook), so its
# thread outlives the test by up to 30 s.
@pytest.mark.leaves_threads("convsync-hook")
def test_a_hung_hook_does_not_hold_up_the_next_prompt(mirror: Mirror) -> None:
    """With a hook that sleeps for a minute, two prompts still get their replies one after the other."""
    mirror.stop()
    mirror.start(on_reply=(sys.executable, "-c", "import time; time.sleep(60)"))
    folder = mirror.agent_dir / "Slow hook"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("one")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["one"], 10, what="the first prompt")
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("two")
    wait_until(lambda: "You said: two" in (folder / "transcript.md").read_text(), 10, what="the second reply")
