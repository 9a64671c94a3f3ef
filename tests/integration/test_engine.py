"""The engine as the daemon drives it: threads, health, reload, and the files/frames steps in order."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from convsync.emulator import FaultRule
from convsync.mirror.scheduler import AgentJob, Job
from convsync.statusreport import collect
from tests.integration.conftest import Mirror, chat, remove_folder
from tests.waiting import wait_until


def test_stop_joins_every_thread(mirror: Mirror) -> None:
    """After stop() no thread of the engine is left (the autouse fixture checks non-daemon ones too)."""
    before = {t.name for t in threading.enumerate()}
    assert any(name.startswith("convsync-worker") for name in before)
    assert mirror.engine is not None and mirror.engine.healthy()
    engine = mirror.engine
    mirror.stop()
    assert not engine.healthy()
    assert not [t for t in threading.enumerate() if t.name.startswith(("convsync-worker", "convsync-scheduler"))]


def test_summary_counts_conversations_and_queue(mirror: Mirror) -> None:
    """The one-line summary names conversations and what is queued."""
    chat(mirror)
    engine = mirror.engine
    assert engine is not None
    wait_until(lambda: engine.summary().conversations == 1, 10)
    summary = engine.summary()
    assert (summary.conversations, summary.queued_prompts, summary.queued_uploads) == (1, 0, 0)
    assert str(summary) == "1 conversation, 0 prompts and 0 uploads queued"


def test_summary_leaves_out_detached_conversations(mirror: Mirror) -> None:
    """A conversation whose folder was deleted (detached) is no longer counted in the summary."""
    folder, _ = chat(mirror)
    chat(mirror, "Other")
    engine = mirror.engine
    assert engine is not None
    wait_until(lambda: engine.summary().conversations == 2, 10)
    remove_folder(folder)
    wait_until(lambda: engine.summary().conversations == 1, 15, what="the deleted folder's conversation to go")


def test_new_folders_of_the_engine_do_not_trigger_agent_passes(mirror: Mirror) -> None:
    """Folders the engine renames into place for new server conversations cause no extra agent pass."""
    engine = mirror.engine
    assert engine is not None
    scheduled: list[Job] = []
    schedule = engine._sched.schedule

    def spy(job: Job, delay: float = 0.0, **options: Any) -> None:
        scheduled.append(job)
        schedule(job, delay, **options)

    engine._sched.schedule = spy  # type: ignore[method-assign]
    n = 5
    cids = [mirror.emu.create_conversation(mirror.aid, f"New {i}") for i in range(n)]
    for cid in cids:
        mirror.wait_idle(mirror.wait_folder_of(cid, 15))
    assert [job for job in scheduled if isinstance(job, AgentJob)] == []


def test_reload_keeps_queued_prompts(mirror: Mirror) -> None:
    """A config reload while prompts are queued (server failing) loses none of them."""
    folder, cid = chat(mirror)
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=503)])
    (folder / "prompt.txt").write_text("survives the reload")
    wait_until(lambda: "error" in (folder / "status").read_text(), 10, what="the send to fail")
    assert mirror.engine is not None
    mirror.engine.reload(dataclasses.replace(mirror.config, debounce_ms=50, poll_idle_seconds=3.0))
    mirror.emu.clear_faults()
    wait_until(lambda: mirror.emu.user_messages(cid) == ["survives the reload"], 40)


def _message_polls_since(mirror: Mirror, since: float) -> int:
    return sum(
        1 for r in mirror.emu.requests if r.method == "GET" and r.path.endswith("/messages") and r.started >= since
    )


def test_reload_to_slower_polls_lowers_the_request_rate(mirror: Mirror) -> None:
    """A reload to longer poll intervals re-times the start-up polls scheduled under the old ones."""
    n = 12
    for i in range(n):
        mirror.emu.create_conversation(mirror.aid, f"Chat {i}")
    wait_until(lambda: len([p for p in mirror.agent_dir.iterdir() if not p.name.startswith(".")]) == n, 15)
    mirror.stop()
    # A restart: every conversation gets a start-up poll, spread over three idle intervals (here 3 s).
    engine = mirror.start(poll_idle_seconds=1.0, poll_active_seconds=1.0)
    slow = dataclasses.replace(
        mirror.config, poll_idle_seconds=300.0, poll_active_seconds=300.0, poll_conversations_seconds=300.0
    )
    engine.reload(slow)
    after = time.time()
    time.sleep(4.0)  # the counting window (measurement, not synchronisation)
    # Under the old intervals nearly every conversation is polled here; under the new ones ~n * 4/900 times.
    assert _message_polls_since(mirror, after) <= n // 3


def test_a_failing_stream_route_is_retried_and_sends_once(mirror: Mirror) -> None:
    """Two 503s on the stream route: the prompt is retried and arrives exactly once."""
    folder, cid = chat(mirror)
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=503, count=2)])
    (folder / "prompt.txt").write_text("third time lucky")
    wait_until(lambda: mirror.emu.user_messages(cid), 30)
    mirror.wait_idle(folder, 30)
    assert mirror.emu.user_messages(cid) == ["third time lucky"]


def test_a_prompt_after_a_dropped_file_is_sent_after_its_upload(mirror: Mirror) -> None:
    """A file dropped into inbox/ and then a prompt: the upload reaches the server first, then the prompt."""
    folder, _ = chat(mirror)
    mirror.emu.clear_requests()
    (folder / "inbox" / "data.csv").write_text("x,y\n1,2\n")
    (folder / "prompt.txt").write_text("/files")
    wait_until(lambda: "data.csv" in (folder / "transcript.md").read_text(), 15, what="the agent to list data.csv")
    order = [r.path.rsplit("/", 1)[-1] for r in mirror.emu.requests if r.method == "POST"]
    assert order.index("files") < order.index("stream")
    assert (folder / "files" / "data.csv").read_text() == "x,y\n1,2\n"
    assert list((folder / "inbox").iterdir()) == []


def test_agent_outputs_and_data_frames_appear(mirror: Mirror) -> None:
    """A file the agent writes lands in files/; a data frame it makes lands in data-frames/ as Parquet."""
    folder, _ = chat(mirror)
    (folder / "prompt.txt").write_text("/write result.txt forty-two")
    wait_until((folder / "files" / "result.txt").is_file, 15)
    assert (folder / "files" / "result.txt").read_text() == "forty-two"
    wait_until(lambda: (folder / "prompt.txt").read_text() == "", 10)
    (folder / "prompt.txt").write_text("/bigframe totals 10 2")
    wait_until((folder / "data-frames" / "totals.parquet").is_file, 15)


def test_status_shows_the_error_and_errors_log_says_what_to_do(mirror: Mirror) -> None:
    """While the server fails, status says error and errors.log has one line with the fix."""
    folder, _ = chat(mirror)
    mirror.emu.set_faults([FaultRule(method="POST", path=r"/stream$", status=503)])
    (folder / "prompt.txt").write_text("blocked")
    wait_until(lambda: (folder / "status").read_text().startswith("error:"), 10)
    log = (folder / "errors.log").read_text().splitlines()
    assert len(log) == 1
    assert "fix:" in log[0]
    assert "1 prompt" in (folder / "status").read_text()
    mirror.emu.clear_faults()
    mirror.wait_idle(folder, 40)


def test_status_reads_the_state_while_the_daemon_runs(mirror: Mirror) -> None:
    """`convsync status` opens the state read-only and sees every conversation while the engine writes."""
    folder, cid = chat(mirror)
    (folder / "prompt.txt").write_text("counted")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["counted"], 10)
    report = collect(mirror.config)
    assert report is not None
    assert report.root_ok
    [entry] = report.conversations
    assert (entry.folder, entry.id, entry.state) == ("Demo Agent/Chat", cid, "active")
