"""The fault campaign: the server fails in every way the emulator can inject, and convsync still delivers every
prompt and upload exactly once, ends with complete transcripts, never busy-loops and says what is wrong meanwhile.

Every test checks the same outcome: prompts on the server exactly once and in order, each dropped file committed
exactly once, ``transcript.md`` equal to the rendering of the server's messages, and no window of the client's
rate limit with more attempts than it allows (attempts counted at the transport, so refused connections count).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from tests.campaign.rig import LIMIT, Rig, max_in_window
from tests.waiting import wait_until

KEY = "s4w_fault-campaign-key"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY, seed=6)) as server:
        yield server


def within_limiter(rig: Rig) -> None:
    """No window of the limiter saw more attempts than it grants (a retry loop would exceed it).

    The window is measured 0.2 s short: a thread reaches the transport a moment after the start the limiter
    reserved for it, so the first and the last of a full window can look closer than they were granted."""
    assert max_in_window(rig.transport.attempts, LIMIT.per_seconds - 0.2) <= LIMIT.requests


def test_bursts_of_500_502_503_deliver_every_prompt_and_upload_exactly_once(rig: Rig) -> None:
    """5xx before and after the server applied a send, and random 5xx on reads, lose and double nothing."""
    rig.start()
    folder, cid = rig.conversation("Bursts")
    rig.emu.set_faults(
        [
            FaultRule(route="stream_message", status=503, count=2),  # refused before anything happened
            FaultRule(route="stream_message", status=502, body="plain", after=True, count=1),  # applied, then 502
            FaultRule(route="upload_files", status=503, after=True, count=1),  # stored, then 503
            FaultRule(route="upload_files", status=500, count=1),
            FaultRule(method="GET", path=r"/messages$", status=502, body="html", probability=0.3),
            FaultRule(method="GET", status=500, probability=0.2),
        ]
    )
    prompts, files = [], {}
    for i in range(4):
        files[f"burst-{i}.csv"] = rig.drop(folder, f"burst-{i}.csv", f"n,v\n{i},{i * 2}\n".encode())
        prompts.append(f"burst prompt {i}")
        rig.save_prompt(folder, prompts[-1])
    rig.wait_delivered(cid, prompts)
    wait_until(lambda: len(rig.emu.file_hashes(cid)) == len(files), 60, what="every upload")
    rig.emu.clear_faults()
    rig.wait_mirrored(folder, cid)
    rig.uploads_once(cid, files)
    assert rig.emu.user_messages(cid) == prompts
    within_limiter(rig)


def test_a_429_with_retry_after_pauses_every_request_for_that_long(rig: Rig) -> None:
    """After a 429 with Retry-After: 2, no request starts for 2 s (all threads pause), then the prompt goes once."""
    rig.start()
    folder, cid = rig.conversation("Rate limited")
    rig.emu.set_faults([FaultRule(route="stream_message", status=429, body="gateway", retry_after=2.0, count=1)])
    rig.save_prompt(folder, "wait your turn")
    rig.wait_delivered(cid, ["wait your turn"])
    refused = [r for r in rig.emu.requests if r.status == 429]
    assert len(refused) == 1
    too_early = [r for r in rig.emu.requests if refused[0].finished + 0.05 < r.started < refused[0].finished + 1.9]
    assert not too_early, too_early
    rig.wait_mirrored(folder, cid)
    within_limiter(rig)


def test_the_servers_own_rate_limit_is_respected_without_hammering(rig: Rig) -> None:
    """With the server allowing 8 requests per 2 s window, the prompts still go out once and 429s stay rare."""
    rig.start()
    folder, cid = rig.conversation("Tight server")
    rig.emu.clear_requests()
    rig.emu.configure(rate_limit=8, rate_window=2.0)
    prompts = [f"tight {i}" for i in range(3)]
    started = time.monotonic()
    for text in prompts:
        rig.save_prompt(folder, text)
    rig.wait_delivered(cid, prompts, timeout=90)
    windows = (time.monotonic() - started) / 2.0 + 1
    refused = sum(1 for r in rig.emu.requests if r.status == 429)
    assert refused <= 4 * windows, (refused, windows)  # a few in-flight requests per window, not a loop
    rig.emu.configure(rate_limit=0)
    rig.wait_mirrored(folder, cid)
    within_limiter(rig)


def test_timeouts_after_the_server_stored_the_prompt_do_not_send_it_twice(rig: Rig) -> None:
    """A stream whose answer comes later than the client waits (the prompt is stored anyway) is not resent."""
    rig.start(timeout=1.0, stream_idle_timeout=1.0)
    folder, cid = rig.conversation("Slow server")
    rig.emu.set_faults(
        [
            FaultRule(route="stream_message", latency=1.6, count=1),
            FaultRule(route="list_messages", latency=1.6, count=2),
            FaultRule(route="upload_files", latency=1.6, count=1),
        ]
    )
    sha = rig.drop(folder, "late.csv", b"a,b\n1,2\n")
    rig.save_prompt(folder, "are you there")
    rig.wait_delivered(cid, ["are you there"])
    rig.save_prompt(folder, "still there")
    rig.wait_delivered(cid, ["are you there", "still there"])
    rig.wait_mirrored(folder, cid)
    rig.uploads_once(cid, {"late.csv": sha})
    within_limiter(rig)


def test_connection_resets_before_and_after_the_server_applied_a_send(rig: Rig) -> None:
    """TCP resets on reads, and after a stream or an upload was applied, lose and double nothing."""
    rig.start()
    folder, cid = rig.conversation("Resets")
    rig.emu.set_faults(
        [
            FaultRule(route="stream_message", reset=True, after=True, count=1),
            FaultRule(route="upload_files", reset=True, after=True, count=1),
            FaultRule(route="stream_message", reset=True, count=1),
            FaultRule(method="GET", reset=True, probability=0.25),
        ]
    )
    files = {"reset.bin": rig.drop(folder, "reset.bin", bytes(range(256)) * 1000)}
    prompts = ["reset one", "reset two"]
    for text in prompts:
        rig.save_prompt(folder, text)
    rig.wait_delivered(cid, prompts)
    wait_until(lambda: "reset.bin" in rig.emu.file_hashes(cid), 60, what="the upload")
    rig.emu.clear_faults()
    rig.wait_mirrored(folder, cid)
    rig.uploads_once(cid, files)
    within_limiter(rig)


@pytest.mark.parametrize(
    "finish_run",
    [
        pytest.param(True, id="run-finishes"),
        pytest.param(False, id="run-cancelled"),
    ],
)
def test_a_stream_cut_mid_reply_ends_with_the_servers_reply_in_the_transcript(rig: Rig, finish_run: bool) -> None:
    """A reply stream cut after a few events: the transcript shows the server's messages (the complete reply
    when the run finished, no reply when the cut cancelled it); what streamed stands, marked interrupted."""
    rig.start()
    folder, cid = rig.conversation("Cut")
    rig.emu.set_faults([FaultRule(route="stream_message", stream_cut_after=6, finish_run=finish_run, count=1)])
    rig.save_prompt(folder, "/slow 12 30 cut me")
    rig.wait_delivered(cid, ["/slow 12 30 cut me"])
    wait_until(lambda: not rig.emu.active_runs, 20, what="the run to end")
    rig.wait_mirrored(folder, cid, timeout=15)  # a few polls, not the grace period of a live reply
    transcript = (folder / "transcript.md").read_text()
    assert ("Part 12 of 12." in transcript) is finish_run
    rig.save_prompt(folder, "after the cut")
    rig.wait_delivered(cid, ["/slow 12 30 cut me", "after the cut"])
    rig.wait_mirrored(folder, cid, timeout=15)


def test_the_server_down_for_a_while_queues_everything_says_so_and_delivers_once(rig: Rig) -> None:
    """Server down for ~8 s: prompts and a dropped file wait, status and errors.log say what is wrong, the
    client backs off (no busy loop), and everything goes out exactly once when the server is back."""
    rig.start()
    folder, cid = rig.conversation("Outage")
    rig.save_prompt(folder, "before the outage")
    rig.wait_delivered(cid, ["before the outage"])
    rig.wait_mirrored(folder, cid)

    rig.emu.stop()
    down_at = time.monotonic()
    rig.save_prompt(folder, "during the outage 1")
    rig.save_prompt(folder, "during the outage 2")
    sha = rig.drop(folder, "outage.csv", b"x,y\n1,2\n")
    status = folder / "status"
    wait_until(lambda: status.read_text().startswith("error:"), 20, what="an error status")
    wait_until(lambda: "2 prompts" in status.read_text(), 20, what="the queue in the status")
    text = status.read_text()
    assert "cannot be reached" in text and "next try" in text, text
    report = rig.status_report()
    row = next(c for c in report.conversations if c.id == cid)
    assert row.queued_prompts == 2 and row.last_error, row
    assert "fix:" in (folder / "errors.log").read_text()
    wait_until(lambda: time.monotonic() - down_at > 8, 15, what="eight seconds of outage")
    attempts = rig.transport.between(down_at, time.monotonic())
    rig.emu.start()

    prompts = ["before the outage", "during the outage 1", "during the outage 2"]
    rig.wait_delivered(cid, prompts, timeout=60)
    wait_until(lambda: "outage.csv" in rig.emu.file_hashes(cid), 60, what="the upload")
    rig.wait_mirrored(folder, cid)
    rig.uploads_once(cid, {"outage.csv": sha})
    assert attempts <= 2 * LIMIT.requests, attempts  # ~8 s of outage: backoff, far below the limiter's 80
    within_limiter(rig)


def test_the_server_restarted_with_its_data_changes_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    """The server restarts from its data dir on the same port: earlier work is not redone, new work goes once."""
    data = tmp_path / "emulator-data"
    first = EmulatorServer(EmulatorOptions(api_key=KEY, data_dir=data))
    first.start()
    port = first.port
    rig = Rig.make(first, tmp_path)
    second: EmulatorServer | None = None
    try:
        rig.start()
        folder, cid = rig.conversation("Restart")
        rig.save_prompt(folder, "/write kept.txt survives the restart")
        files = {"in.csv": rig.drop(folder, "in.csv", b"k,v\n1,2\n")}
        rig.save_prompt(folder, "first life")
        rig.wait_delivered(cid, ["/write kept.txt survives the restart", "first life"])
        wait_until((folder / "files" / "kept.txt").is_file, 30, what="files/kept.txt")
        rig.wait_mirrored(folder, cid)
        first.close()

        rig.save_prompt(folder, "while it restarts")
        second = EmulatorServer(EmulatorOptions(api_key=KEY, data_dir=data, port=port))
        commits = rig.commits
        rig.emu = second
        rig.commits = type(commits)(second) if commits is not None else None
        second.start()
        prompts = ["/write kept.txt survives the restart", "first life", "while it restarts"]
        rig.wait_delivered(cid, prompts)
        rig.wait_mirrored(folder, cid)
        assert commits is not None and commits.counts[(cid, "in.csv")] == 1
        assert rig.commits is not None and rig.commits.counts[(cid, "in.csv")] == 0  # not uploaded again
        downloads = [r for r in second.requests if r.route == "download_file"]
        assert not downloads, downloads  # files/kept.txt is current: not fetched again
        assert second.file_hashes(cid)["in.csv"] == files["in.csv"]
        within_limiter(rig)
    finally:
        rig.stop()
        first.close()
        if second is not None:
            second.close()


def test_a_create_whose_answer_is_lost_adopts_the_conversation_instead_of_making_a_second(rig: Rig) -> None:
    """mkdir, and the server creates the conversation but the answer is lost to a reset (as when convsync dies
    between the POST and recording the binding): the folder is bound to that conversation, no second one."""
    rig.start()
    rig.emu.set_faults([FaultRule(route="create_conversation", reset=True, after=True, count=1)])
    before = {c["id"] for c in rig.emu.conversations(rig.aid)}
    folder = rig.agent_dir / "Made while the answer got lost"
    folder.mkdir()
    marker = folder / ".conversation"
    wait_until(marker.is_file, 30, what="the folder to be bound")
    made = [c for c in rig.emu.conversations(rig.aid) if c["id"] not in before]
    assert len(made) == 1, made
    assert marker.read_text().strip() == made[0]["id"]
    rig.save_prompt(folder, "in the adopted conversation")
    rig.wait_delivered(made[0]["id"], ["in the adopted conversation"])
    within_limiter(rig)
