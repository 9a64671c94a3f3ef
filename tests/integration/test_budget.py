"""The request budget as a person feels it: the newest conversations first, a prompt before any poll."""

from __future__ import annotations

from convsync.emulator.options import RequestRecord
from convsync.mirror.engine import WORKERS
from tests.integration.conftest import Mirror
from tests.waiting import wait_until


def in_order(mirror: Mirror) -> list[RequestRecord]:
    return sorted(mirror.emu.requests, key=lambda r: r.started)


def routes(mirror: Mirror, route: str) -> list[str]:
    """The conversation ids of the ``route`` requests, in the order the server got them."""
    return [r.path.split("/conversations/")[1].split("/")[0] for r in in_order(mirror) if r.route == route]


def test_a_first_mirror_reads_the_newest_conversations_first(mirror: Mirror) -> None:
    """The server lists newest first; the ten newest conversations' transcripts are read first (but for the
    looks the other workers took at the same moment, whose requests may overtake)."""
    mirror.stop()
    cids = [mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}") for i in range(30)]
    mirror.start()
    wait_until(lambda: set(routes(mirror, "list_messages")) >= set(cids), 20, what="every transcript read")
    assert set(cids[-10:]) <= set(routes(mirror, "list_messages")[: 10 + WORKERS - 2])


def test_a_first_mirror_lists_files_and_frames_after_the_transcripts(mirror: Mirror) -> None:
    """Files and data frames are listed in the background lane, once the transcripts' first looks are taken (only
    the looks the other workers are still carrying out may come later)."""
    mirror.stop()
    cids = [mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}") for i in range(30)]
    mirror.start()
    wait_until(lambda: set(routes(mirror, "list_data_frames")) >= set(cids), 20, what="every frames listing")
    requests = in_order(mirror)
    first_files = next(i for i, r in enumerate(requests) if r.route == "list_files")
    read_before = {r.path for r in requests[:first_files] if r.route == "list_messages"}
    assert len(read_before) >= len(cids) - (WORKERS - 1)


def test_a_prompt_saved_during_a_first_mirror_goes_out_before_it_ends(mirror: Mirror) -> None:
    """With the budget full of first looks, a prompt saved in a folder already built is sent at once, not after
    the remaining conversations' transcripts."""
    mirror.stop()
    cids = [mirror.emu.create_conversation(mirror.aid, f"Remote {i:02d}") for i in range(60)]
    mirror.start(rate_limit_requests=10, rate_limit_window_seconds=2.0)  # 5 requests a second: ~12 s of looks
    folder = mirror.wait_folder_of(cids[-1])
    (folder / "prompt.txt").write_text("asked during the first mirror")
    wait_until(lambda: mirror.emu.user_messages(cids[-1]), 20, what="the prompt to be sent")
    assert len(set(routes(mirror, "list_messages"))) < len(cids)
