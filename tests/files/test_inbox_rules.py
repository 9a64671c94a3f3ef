"""inbox/ rules: which names are temp files, what each entry is, and when a file counts as complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convsync.mirror.inbox import (
    EntryKind,
    FileSig,
    InboxEntry,
    InboxTracker,
    classify,
    is_temp_name,
    list_inbox,
)


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf.part",
        "report.pdf.crdownload",
        "report.pdf.download",
        "report.pdf.opdownload",
        "report.pdf.partial",
        ".report.pdf.Xa81Qz",  # rsync
        "notes.txt~",
        ".notes.txt.swp",
        "notes.txt.swp",
        ".#notes.txt",
        "#notes.txt#",
        "4913",
        "notes.txt___jb_tmp___",
        "notes.txt___jb_old___",
        "~$budget.xlsx",
        ".DS_Store",
        ".convsync-tmp-ab12cd34-x",
    ],
)
def test_temp_and_hidden_names_are_ignored(name: str) -> None:
    """Browser, rsync and editor temp names, and hidden files, are not uploaded while they have that name."""
    assert is_temp_name(name)


@pytest.mark.parametrize("name", ["report.pdf", "data.csv", "4914", "archive.tar.gz", "part", "a~b.txt"])
def test_ordinary_names_are_candidates(name: str) -> None:
    """Ordinary file names are not mistaken for temp files."""
    assert not is_temp_name(name)


def test_listing_classifies_every_kind_of_entry(tmp_path: Path) -> None:
    """Regular, empty, temp, folder, symlink and fifo entries each get their kind; links are not followed."""
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "empty.txt").touch()
    (tmp_path / "b.txt.part").write_text("half")
    (tmp_path / "folder").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("secret")
    (tmp_path / "link.txt").symlink_to(outside)
    os.mkfifo(tmp_path / "pipe")
    kinds = {e.name: e.kind for e in list_inbox(tmp_path)}
    assert kinds == {
        "a.txt": EntryKind.FILE,
        "empty.txt": EntryKind.EMPTY,
        "b.txt.part": EntryKind.TEMP,
        "folder": EntryKind.DIRECTORY,
        "link.txt": EntryKind.SYMLINK,
        "pipe": EntryKind.SPECIAL,
    }


def test_a_missing_inbox_lists_nothing(tmp_path: Path) -> None:
    """A conversation without an inbox/ folder simply has nothing to upload."""
    assert list_inbox(tmp_path / "inbox") == []


def test_a_non_utf8_name_is_a_problem(tmp_path: Path) -> None:
    """A name that is not valid UTF-8 cannot go into a multipart request, so it is reported, not sent."""
    os.close(os.open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
    (entry,) = list_inbox(tmp_path)
    assert entry.kind is EntryKind.EMPTY or entry.kind is EntryKind.BAD_NAME
    Path(tmp_path, entry.name).write_bytes(b"x")
    (entry,) = list_inbox(tmp_path)
    assert entry.kind is EntryKind.BAD_NAME


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    """A regular file its user cannot read is classified as unreadable (as root every file is readable, so the
    access check's answer is passed in)."""
    path = tmp_path / "secret.txt"
    path.write_text("x")
    assert classify("secret.txt", path.lstat(), readable=False) is EntryKind.UNREADABLE


# --- the tracker: pure over listings and time ---------------------------------------------------------------

SIG = FileSig(size=10, mtime_ns=1_000, inode=7)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.wall_ns = 5_000

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock) -> InboxTracker:
    return InboxTracker(quiet_seconds=1.0, unhinted_quiet_seconds=3.0, clock=clock, wall_clock_ns=lambda: clock.wall_ns)


def entry(name: str = "a.txt", sig: FileSig = SIG, kind: EntryKind = EntryKind.FILE) -> InboxEntry:
    return InboxEntry(name, kind, sig, 0o100644)


def test_a_hinted_file_is_ready_after_the_quiet_period() -> None:
    """After a close-after-write hint, a file unchanged for the quiet period is ready."""
    clock = Clock()
    t = tracker(clock)
    t.hint("a.txt")
    first = t.update([entry()])
    assert first.ready == () and first.waiting == ("a.txt",) and first.recheck_in == pytest.approx(1.0)
    clock.now += 1.0
    assert [r.name for r in t.update([entry()]).ready] == ["a.txt"]


def test_a_file_without_hint_waits_the_longer_quiet_period() -> None:
    """Without a close or move hint (missed event, start-up) a file must stay unchanged for longer."""
    clock = Clock()
    t = tracker(clock)
    t.update([entry()])
    clock.now += 1.5
    assert t.update([entry()]).ready == ()
    clock.now += 1.5
    assert [r.name for r in t.update([entry()]).ready] == ["a.txt"]


def test_a_change_restarts_the_quiet_period() -> None:
    """A file that grows between two looks starts its quiet period again."""
    clock = Clock()
    t = tracker(clock)
    t.hint("a.txt")
    t.update([entry()])
    clock.now += 0.9
    grown = FileSig(size=20, mtime_ns=2_000, inode=7)
    assert t.update([entry(sig=grown)]).ready == ()
    clock.now += 0.9
    assert t.update([entry(sig=grown)]).ready == ()
    clock.now += 0.2
    assert t.update([entry(sig=grown)]).ready != ()


def test_a_write_after_the_hint_voids_the_hint() -> None:
    """A hint older than the file's last write means the file was reopened: the unhinted period applies."""
    clock = Clock()
    t = tracker(clock)
    t.hint("a.txt")  # wall clock 5_000
    later_write = FileSig(size=30, mtime_ns=9_000, inode=7)
    t.update([entry(sig=later_write)])
    clock.now += 1.0
    assert t.update([entry(sig=later_write)]).ready == ()
    clock.now += 2.0
    assert t.update([entry(sig=later_write)]).ready != ()


def test_a_replaced_file_starts_over() -> None:
    """A new inode under the same name (a rename over it) is a new file with a new quiet period."""
    clock = Clock()
    t = tracker(clock)
    t.update([entry()])
    clock.now += 2.9
    assert t.update([entry(sig=FileSig(10, 1_000, inode=8))]).ready == ()


def test_a_directory_is_reported_once_and_never_ready() -> None:
    """A folder in inbox/ is reported once with what to do, and is not reported again while unchanged."""
    clock = Clock()
    t = tracker(clock)
    first = t.update([entry("photos", kind=EntryKind.DIRECTORY)])
    assert [p.name for p in first.problems] == ["photos"]
    assert "folder" in first.problems[0].reason
    assert first.ready == () and first.waiting == ()
    clock.now += 10
    assert t.update([entry("photos", kind=EntryKind.DIRECTORY)]).problems == ()


def test_a_problem_is_reported_again_when_it_changes() -> None:
    """A reported entry that changes (e.g. chmod) but still cannot be uploaded is reported again."""
    t = tracker(Clock())
    t.update([entry(kind=EntryKind.UNREADABLE)])
    again = t.update([InboxEntry("a.txt", EntryKind.UNREADABLE, SIG, 0o100200)])
    assert [p.name for p in again.problems] == ["a.txt"]


def test_an_empty_file_is_reported_after_the_quiet_period_and_uploaded_once_written() -> None:
    """A zero-byte file waits (it may be about to be written), is then reported, and goes up once written."""
    clock = Clock()
    t = tracker(clock)
    empty = FileSig(0, 1_000, 7)
    t.hint("a.txt")
    assert t.update([entry(sig=empty, kind=EntryKind.EMPTY)]).waiting == ("a.txt",)
    clock.now += 1
    reported = t.update([entry(sig=empty, kind=EntryKind.EMPTY)])
    assert [p.name for p in reported.problems] == ["a.txt"] and "empty" in reported.problems[0].reason
    assert reported.waiting == ()
    clock.wall_ns = 20_000
    written = FileSig(5, 10_000, 7)
    t.hint("a.txt")
    t.update([entry(sig=written)])
    clock.now += 1
    assert [r.name for r in t.update([entry(sig=written)]).ready] == ["a.txt"]


def test_temp_names_are_neither_waiting_nor_problems() -> None:
    """A browser's .part file does not hold back prompts and is not reported."""
    scan = tracker(Clock()).update([entry("x.pdf.part", kind=EntryKind.TEMP)])
    assert scan.ready == scan.waiting == scan.problems == ()
    assert scan.recheck_in is None


def test_recheck_is_the_nearest_end_of_a_quiet_period() -> None:
    """The worker is told when to look again even though no file event will arrive."""
    clock = Clock()
    t = tracker(clock)
    t.update([entry("a.txt")])
    clock.now += 1
    t.hint("b.txt")
    scan = t.update([entry("a.txt"), entry("b.txt", sig=FileSig(3, 1, 9))])
    assert scan.recheck_in == pytest.approx(1.0)
    assert scan.waiting == ("a.txt", "b.txt")


def test_a_file_that_left_is_forgotten() -> None:
    """A file that vanished and came back is a new file, with a new quiet period."""
    clock = Clock()
    t = tracker(clock)
    t.update([entry()])
    clock.now += 2
    t.update([])
    clock.now += 2
    assert t.update([entry()]).ready == ()
