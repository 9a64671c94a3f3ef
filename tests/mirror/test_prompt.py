"""Taking prompt.txt without losing a byte (convsync.mirror.prompt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convsync.mirror.prompt import (
    PROMPT,
    TAKING,
    NotText,
    Taken,
    decode_prompt,
    open_for_writing,
    should_take,
    take,
)
from convsync.mirror.state import State


class Outbox:
    def __init__(self) -> None:
        self.items: list[Taken] = []

    def store(self, taken: Taken) -> None:
        self.items.append(taken)

    def is_stored(self, identity: str) -> bool:
        return any(t.identity == identity for t in self.items)


def test_decode_strips_surrounding_whitespace_and_a_bom() -> None:
    """The prompt sent is the text without surrounding whitespace (and without a UTF-8 BOM)."""
    assert decode_prompt("\ufeff  Hello\n  world \n\n".encode()) == "Hello\n  world"


@pytest.mark.parametrize("raw", [b"\xff\xfe bad", b"nul\0inside"])
def test_bytes_that_are_not_text_are_no_prompt(raw: bytes) -> None:
    """Invalid UTF-8 and NUL bytes are not text."""
    assert decode_prompt(raw) is None


def test_should_take_on_a_signal_at_once() -> None:
    """A close-after-write or rename signal takes a non-empty file immediately."""
    assert should_take(5, mtime=100.0, signalled=True, now=100.0, open_for_writing=lambda: True)


def test_should_not_take_a_fresh_file_without_signal() -> None:
    """Without a signal, a recently written file may still be being written."""
    assert not should_take(5, mtime=100.0, signalled=False, now=101.0, open_for_writing=lambda: False)


def test_should_take_a_quiet_file_nobody_writes() -> None:
    """The fallback: quiet for the quiet period and not open for writing."""
    assert should_take(5, mtime=100.0, signalled=False, now=104.0, open_for_writing=lambda: False)
    assert not should_take(5, mtime=100.0, signalled=False, now=104.0, open_for_writing=lambda: True)


def test_take_stores_the_prompt_and_leaves_an_empty_prompt_txt(tmp_path: Path) -> None:
    """The text goes to the outbox first, then prompt.txt is empty and the taking file gone."""
    (tmp_path / PROMPT).write_text("  Hello agent \n")
    outbox = Outbox()
    taken = take(tmp_path, outbox.store, outbox.is_stored)
    assert [t.text for t in taken] == ["Hello agent"]
    assert outbox.items == taken
    assert (tmp_path / PROMPT).read_bytes() == b""
    assert not (tmp_path / TAKING).exists()


def test_a_save_racing_the_take_is_not_overwritten(tmp_path: Path) -> None:
    """If the user saves a new prompt.txt while one is being taken, the new file is kept for the next take."""
    (tmp_path / PROMPT).write_text("first")
    outbox = Outbox()

    def store(taken: Taken) -> None:
        outbox.store(taken)
        (tmp_path / PROMPT).write_text("second")  # saved while the first was being stored

    take(tmp_path, store, outbox.is_stored)
    assert (tmp_path / PROMPT).read_text() == "second"
    take(tmp_path, outbox.store, outbox.is_stored)
    assert [t.text for t in outbox.items] == ["first", "second"]


class Killed(BaseException):
    """Stands for a SIGKILL at a chosen step: nothing after it runs."""


def test_a_leftover_taking_file_already_stored_is_dropped(tmp_path: Path) -> None:
    """After a crash between storing and unlinking, the prompt is not stored twice."""
    (tmp_path / PROMPT).write_text("once")
    outbox = Outbox()

    def store_then_die(taken: Taken) -> None:
        outbox.store(taken)
        raise Killed

    with pytest.raises(Killed):
        take(tmp_path, store_then_die, outbox.is_stored)
    assert (tmp_path / TAKING).exists()
    take(tmp_path, outbox.store, outbox.is_stored)
    assert [t.text for t in outbox.items] == ["once"]
    assert not (tmp_path / TAKING).exists()


def test_a_leftover_taking_file_not_yet_stored_is_taken(tmp_path: Path) -> None:
    """After a crash between the rename and storing, the prompt is taken on the next pass."""
    (tmp_path / TAKING).write_text("not lost")
    outbox = Outbox()
    take(tmp_path, outbox.store, outbox.is_stored)
    assert [t.text for t in outbox.items] == ["not lost"]


def test_a_save_repeating_the_previous_prompt_survives_a_crash_before_its_commit(tmp_path: Path) -> None:
    """Saves "ok 2", "ok 2" with a crash between the second exchange and its commit: both are stored."""
    state = State(tmp_path / "state" / "state.db")
    folder = tmp_path / "conv"
    folder.mkdir()

    def store(taken: Taken) -> None:
        state.enqueue("c1", "prompt", taken.text, taken.sha256, taken_from=taken.identity)

    def is_stored(identity: str) -> bool:
        return state.was_taken("c1", identity)

    def die(taken: Taken) -> None:
        raise Killed

    (folder / PROMPT).write_text("ok 2\n")
    take(folder, store, is_stored)
    (folder / PROMPT).write_text("ok 2\n")
    with pytest.raises(Killed):
        take(folder, die, is_stored)
    assert (folder / TAKING).read_text() == "ok 2\n"
    take(folder, store, is_stored)  # the next run recovers the leftover
    assert [e.payload for e in state.pending("c1")] == ["ok 2", "ok 2"]
    assert not (folder / TAKING).exists()
    state.close()


def test_text_written_into_the_taken_file_becomes_a_further_prompt(tmp_path: Path) -> None:
    """A writer still holding the file open keeps writing into the taken file; that text is not lost."""
    (tmp_path / PROMPT).write_text("part one")
    outbox = Outbox()
    writer = (tmp_path / PROMPT).open("a")

    def store(taken: Taken) -> None:
        outbox.store(taken)
        if len(outbox.items) == 1:
            writer.write(" and part two")
            writer.flush()

    take(tmp_path, store, outbox.is_stored)
    writer.close()
    assert [t.text for t in outbox.items] == ["part one", "and part two"]


def test_a_prompt_that_is_not_text_is_kept_aside(tmp_path: Path) -> None:
    """Binary bytes are not sent; they are moved to a file the user can inspect, and reported."""
    (tmp_path / PROMPT).write_bytes(b"\x00\x01binary")
    outbox = Outbox()
    with pytest.raises(NotText) as info:
        take(tmp_path, outbox.store, outbox.is_stored)
    assert info.value.kept_as.read_bytes() == b"\x00\x01binary"
    assert outbox.items == []
    assert (tmp_path / PROMPT).read_bytes() == b""


def test_open_for_writing_sees_another_process_holding_the_file(tmp_path: Path) -> None:
    """A process that holds prompt.txt open for writing (cat > prompt.txt) is detected."""
    path = tmp_path / PROMPT
    path.write_text("")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; f = open({str(path)!r}, 'a'); print('ok', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ok"
        assert open_for_writing(path)
    finally:
        holder.communicate("")
    assert not open_for_writing(path)


def test_prompt_txt_never_goes_missing_while_it_is_taken(tmp_path: Path) -> None:
    """The file is swapped for an empty one in one step: at no moment is there no prompt.txt."""
    (tmp_path / PROMPT).write_text("hello")
    seen: list[bool] = []

    def store(taken: Taken) -> None:
        seen.append((tmp_path / PROMPT).exists())

    take(tmp_path, store, lambda _: False)
    assert seen == [True]
