"""inbox/ uploads against the emulator: one request, moved to files/, crash-safe, no torn file marked done."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from convsync.emulator import FaultRule
from convsync.mirror.filesync import plan_downloads, remote_version
from convsync.mirror.inbox import InboxTracker, ReadyFile, upload
from tests.files.conftest import Conv
from tests.waiting import wait_until


def ready_now(conv: Conv) -> tuple[ReadyFile, ...]:
    """Every candidate in the inbox, judged complete at once (quiet periods of zero)."""
    return InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0).scan(conv.inbox).ready


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_dropped_together_go_in_one_request_and_move_to_files(conv: Conv) -> None:
    """Three stable files are uploaded in one multipart request, then moved to files/ under the same names."""
    contents = {"a.txt": b"alpha", "b.csv": b"x,y\n1,2\n", "c.bin": os.urandom(300_000)}
    for name, data in contents.items():
        (conv.inbox / name).write_bytes(data)
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    assert sorted(outcome.moved) == sorted(contents)
    assert conv.requests("POST", "files") == 1
    assert list(conv.inbox.iterdir()) == []
    assert {p.name: p.read_bytes() for p in conv.files.iterdir()} == contents
    assert conv.emu.file_hashes(conv.cid) == {name: sha(data) for name, data in contents.items()}


def test_an_uploaded_file_is_not_downloaded_back(conv: Conv) -> None:
    """The returned server objects, recorded as known, make the download plan empty."""
    (conv.inbox / "mine.txt").write_text("mine")
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    known = {f.file_ref: remote_version(f) for f in outcome.remote}
    assert plan_downloads(conv.client.list_files(conv.aid, conv.cid), known) == []


def test_a_file_already_on_the_server_is_moved_without_uploading(conv: Conv) -> None:
    """After a crash between upload and move, the same bytes are found on the server and only moved."""
    (conv.inbox / "report.pdf").write_bytes(b"%PDF-1.7 same bytes")
    conv.client.upload_files(conv.aid, conv.cid, [("report.pdf", conv.inbox / "report.pdf")])
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    assert outcome.already_there == ("report.pdf",) and outcome.moved == ("report.pdf",)
    assert conv.requests("POST", "files") == 1  # only the upload before the "crash"
    assert [f.file_ref for f in outcome.remote] == ["report.pdf"]


def test_a_file_with_the_same_name_but_other_bytes_is_uploaded_and_replaces(conv: Conv) -> None:
    """A name on the server with other content is uploaded; the server and files/ both get the new bytes."""
    (conv.files / "notes.txt").write_text("old")
    (conv.inbox / "notes.txt").write_text("old")
    conv.client.upload_files(conv.aid, conv.cid, [("notes.txt", conv.inbox / "notes.txt")])
    (conv.inbox / "notes.txt").write_text("new!")
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    assert outcome.moved == ("notes.txt",) and outcome.already_there == ()
    assert (conv.files / "notes.txt").read_text() == "new!"
    assert conv.emu.file_hashes(conv.cid)["notes.txt"] == sha(b"new!")


def test_a_file_changed_since_the_decision_is_not_sent(conv: Conv) -> None:
    """The stability check right before the upload catches a write after the decision."""
    (conv.inbox / "draft.txt").write_text("v1")
    ready = ready_now(conv)
    with (conv.inbox / "draft.txt").open("a") as f:
        f.write(" and more")
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready)
    assert outcome.changed == ("draft.txt",) and outcome.moved == ()
    assert conv.requests("POST", "files") == 0
    assert (conv.inbox / "draft.txt").exists()


def test_a_file_rewritten_during_its_upload_stays_in_the_inbox(conv: Conv) -> None:
    """A file whose bytes change while sent is not moved; the server's copy is reported for the state."""
    path = conv.inbox / "live.bin"
    path.write_bytes(b"a" * 1_000_000)
    touched = threading.Event()

    def rewrite_once(done: int, total: int) -> None:
        if not touched.is_set():
            touched.set()
            with path.open("r+b") as f:  # same size, new bytes, new mtime
                f.write(b"b" * 10)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))

    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv), progress=rewrite_once)
    assert outcome.changed == ("live.bin",) and outcome.moved == ()
    assert path.exists() and not (conv.files / "live.bin").exists()
    assert [f.file_ref for f in outcome.remote] == ["live.bin"]


def test_a_file_growing_during_its_upload_is_reported_as_changed(conv: Conv) -> None:
    """When the client aborts because a file grew under it, the file is changed, not a server failure."""
    path = conv.inbox / "growing.log"
    path.write_bytes(b"x" * 5_000_000)  # several client reads, so the growth happens mid-request

    def append_once(done: int, total: int) -> None:
        if done < total and path.stat().st_size == total:
            with path.open("ab") as f:
                f.write(b"more")

    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv), progress=append_once)
    assert outcome.changed == ("growing.log",) and outcome.moved == ()
    assert path.exists()


def test_a_refused_file_does_not_hold_back_the_others(conv: Conv) -> None:
    """When the server refuses a batch, each file is sent alone; the refused one stays with its reason."""
    (conv.inbox / "a.txt").write_text("a")
    (conv.inbox / "b.txt").write_text("b")
    conv.emu.add_fault(FaultRule(method="POST", path=rf"/{conv.cid}/files$", status=400, count=2))
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    assert [p.name for p in outcome.failed] == ["a.txt"]
    assert "refused by the server" in outcome.failed[0].reason
    assert outcome.moved == ("b.txt",)
    assert (conv.inbox / "a.txt").exists()


def test_an_existing_folder_in_files_blocks_the_move_with_a_reason(conv: Conv) -> None:
    """A folder in files/ named like the file is not replaced; the file stays in inbox/, with a reason."""
    (conv.files / "photos").mkdir()
    (conv.inbox / "photos").write_text("not a folder")
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, ready_now(conv))
    assert [p.name for p in outcome.failed] == ["photos"] and "folder" in outcome.failed[0].reason
    assert (conv.inbox / "photos").is_file()


def test_progress_reaches_the_total(conv: Conv) -> None:
    """progress(done, total) is called as bytes go out and ends at the total of the request's files."""
    (conv.inbox / "one.bin").write_bytes(os.urandom(200_000))
    (conv.inbox / "two.bin").write_bytes(os.urandom(100_000))
    seen: list[tuple[int, int]] = []
    upload(
        conv.client,
        conv.aid,
        conv.cid,
        conv.folder,
        ready_now(conv),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (300_000, 300_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_symlink_out_of_the_root_is_never_uploaded(conv: Conv, tmp_path: Path) -> None:
    """A link in inbox/ to a file elsewhere is reported and left alone; nothing is sent."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (conv.inbox / "secret.txt").symlink_to(secret)
    scan = InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0).scan(conv.inbox)
    assert scan.ready == () and [p.name for p in scan.problems] == ["secret.txt"]
    assert conv.emu.file_hashes(conv.cid) == {}


def test_a_file_written_slowly_is_uploaded_once_complete(conv: Conv) -> None:
    """A file written through one handle in chunks over three seconds is uploaded exactly once, whole."""
    tracker = InboxTracker(quiet_seconds=0.5, unhinted_quiet_seconds=1.5)
    path = conv.inbox / "slow.txt"
    chunks = [f"line {i}\n".encode() * 1000 for i in range(12)]
    uploads: list[tuple[str, ...]] = []

    def writer() -> None:
        with path.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.25)
        tracker.hint("slow.txt")  # what the watcher reports on close-after-write

    thread = threading.Thread(target=writer)
    thread.start()
    try:

        def step() -> bool:
            ready = tracker.scan(conv.inbox).ready
            if ready:
                uploads.append(upload(conv.client, conv.aid, conv.cid, conv.folder, ready).moved)
            return bool(uploads) and not path.exists()

        wait_until(step, timeout=15, interval=0.05, what="the slow file to be uploaded")
    finally:
        thread.join()
    assert uploads == [("slow.txt",)]
    assert conv.emu.file_hashes(conv.cid) == {"slow.txt": sha(b"".join(chunks))}


@pytest.mark.parametrize("name", ["x.pdf.part", "x.pdf.crdownload", ".x.pdf.AbC123", "x.pdf~", "4913"])
def test_temp_files_stay_until_renamed(conv: Conv, name: str) -> None:
    """A temp name is not uploaded; renamed to its final name, it is."""
    (conv.inbox / name).write_text("pdf")
    tracker = InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0)
    assert tracker.scan(conv.inbox).ready == ()
    (conv.inbox / name).rename(conv.inbox / "x.pdf")
    outcome = upload(conv.client, conv.aid, conv.cid, conv.folder, tracker.scan(conv.inbox).ready)
    assert outcome.moved == ("x.pdf",)
