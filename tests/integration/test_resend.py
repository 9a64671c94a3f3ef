"""The resend protection counts only prompts that were sent: a refused one written back is no resend."""

from __future__ import annotations

from convsync.emulator import FaultRule
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def test_a_refused_prompt_saved_again_with_more_below_is_sent_whole(mirror: Mirror) -> None:
    """The server refused the previous prompt: a save holding it, a line break and more is sent whole, not cut."""
    folder, cid = chat(mirror)
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=422, count=1)])
    (folder / "prompt.txt").write_text("Summarize the report")
    wait_until(lambda: list(folder.glob("prompt.failed-*.txt")), 15, what="the refused prompt kept")
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("Summarize the report\nin three lines\n")
    wait_until(lambda: mirror.emu.user_messages(cid), 15, what="the prompt on the server")
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == ["Summarize the report\nin three lines"]
