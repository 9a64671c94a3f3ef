"""A prompt the server refuses is kept as prompt.failed-<UTC time>.txt, not under an internal number."""

from __future__ import annotations

import re
import time

from convsync.emulator import FaultRule
from tests.integration.conftest import Mirror
from tests.waiting import wait_until


def test_a_refused_prompt_is_kept_under_the_time_it_failed(mirror: Mirror) -> None:
    """The server refuses a prompt (422): its text is in prompt.failed-<UTC time>.txt, the time of the failure."""
    folder = mirror.agent_dir / "Chat"
    folder.mkdir()
    mirror.bound(folder)
    mirror.wait_idle(folder)
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=422, count=1)])
    before = time.gmtime(time.time() - 1)
    (folder / "prompt.txt").write_text("a prompt the server refuses")
    [kept] = wait_until(lambda: list(folder.glob("prompt.failed-*.txt")), 15, what="the refused prompt kept")
    after = time.gmtime(time.time() + 1)
    match = re.fullmatch(r"prompt\.failed-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)\.txt", kept.name)
    assert match is not None, kept.name
    when = time.strptime(match.group(1), "%Y-%m-%dT%H-%M-%SZ")
    assert before <= when <= after
    assert kept.read_text() == "a prompt the server refuses\n"
