"""prompt.txt → the server, exactly once and in order, whatever saved it (real watcher, emulator)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Mirror
from tests.waiting import wait_until

TEXT = "Summarise the Q3 numbers\nfor the board, please."


def new_conversation(mirror: Mirror, name: str = "Chat") -> tuple[Path, str]:
    folder = mirror.agent_dir / name
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    return folder, cid


def _write(path: Path, data: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def save_vim(folder: Path, text: str) -> None:
    """vim: probe file 4913, swap file, original renamed to a ~ backup, new file written, backup removed."""
    swap = folder / ".prompt.txt.swp"
    _write(swap, "vim swap")
    probe = folder / "4913"
    _write(probe, "")
    probe.unlink()
    (folder / "prompt.txt").rename(folder / "prompt.txt~")
    _write(folder / "prompt.txt", text + "\n")
    (folder / "prompt.txt~").unlink()
    swap.unlink()


def save_emacs(folder: Path, text: str) -> None:
    """emacs: a .# lock symlink while editing, a ~ backup kept, then the new file written."""
    lock = folder / ".#prompt.txt"
    lock.symlink_to("user@host.1234:1700000000")
    (folder / "prompt.txt").rename(folder / "prompt.txt~")
    _write(folder / "prompt.txt", text + "\n")
    lock.unlink()


def save_vscode(folder: Path, text: str) -> None:
    """VS Code: truncate the file, then write the content in a second step."""
    _write(folder / "prompt.txt", "")
    time.sleep(0.05)  # the editor's two system calls, a moment apart (timing, not synchronisation)
    _write(folder / "prompt.txt", text, os.O_WRONLY)


def save_jetbrains(folder: Path, text: str) -> None:
    """JetBrains safe write: ___jb_tmp___ written, original renamed to ___jb_old___, tmp renamed over."""
    tmp = folder / "prompt.txt___jb_tmp___"
    _write(tmp, text)
    (folder / "prompt.txt").rename(folder / "prompt.txt___jb_old___")
    tmp.rename(folder / "prompt.txt")
    (folder / "prompt.txt___jb_old___").unlink()


def save_echo(folder: Path, text: str) -> None:
    """echo text > prompt.txt."""
    _write(folder / "prompt.txt", text + "\n")


def save_cat_slowly(folder: Path, text: str) -> None:
    """cat > prompt.txt typed slowly: one open file, lines written over two seconds, then closed."""
    with (folder / "prompt.txt").open("w") as f:
        for line in text.splitlines(keepends=True):
            f.write(line)
            f.flush()
            time.sleep(1.0)  # the user typing (timing, not synchronisation)


def save_cp(folder: Path, text: str) -> None:
    """cp draft prompt.txt (the draft outside the root)."""
    draft = folder.parent.parent.parent / "draft.txt"
    draft.write_text(text)
    shutil.copyfile(draft, folder / "prompt.txt")


def save_mv(folder: Path, text: str) -> None:
    """mv draft prompt.txt (the draft written outside the root, then moved into place)."""
    draft = folder.parent.parent.parent / "draft.txt"
    draft.write_text(text)
    shutil.move(draft, folder / "prompt.txt")


SAVES: dict[str, Callable[[Path, str], None]] = {
    "vim": save_vim,
    "emacs": save_emacs,
    "vscode": save_vscode,
    "jetbrains": save_jetbrains,
    "echo": save_echo,
    "cat-slowly": save_cat_slowly,
    "cp": save_cp,
    "mv": save_mv,
}


@pytest.mark.parametrize("editor", list(SAVES))
def test_each_save_pattern_sends_exactly_one_prompt(mirror: Mirror, editor: str) -> None:
    """One save, from any editor or shell pattern, is exactly one server message with the saved text."""
    folder, cid = new_conversation(mirror)
    SAVES[editor](folder, TEXT)
    wait_until(lambda: mirror.emu.user_messages(cid), 15, what="the prompt on the server")
    mirror.wait_idle(folder)
    wait_until(lambda: f"You said: {TEXT}" in (folder / "transcript.md").read_text(), 10, what="the reply")
    assert mirror.emu.user_messages(cid) == [TEXT]
    assert (folder / "prompt.txt").read_text() == ""


def test_ten_prompts_in_quick_succession_arrive_in_order_once(mirror: Mirror) -> None:
    """Prompts saved one after another (each as soon as the last was taken) arrive in order, each once."""
    folder, cid = new_conversation(mirror)
    prompt = folder / "prompt.txt"
    expected = [f"prompt number {i}" for i in range(10)]
    for text in expected:
        prompt.write_text(text + "\n")
        wait_until(lambda: prompt.read_text() == "", 10, what=f"{text!r} to be taken")
    wait_until(lambda: mirror.emu.user_messages(cid) == expected, 30, what="all ten prompts on the server")
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == expected


def test_prompts_saved_while_the_server_is_down_arrive_in_order_once_it_is_back(mirror: Mirror) -> None:
    """With the server down, saved prompts are kept (prompt.txt is still emptied) and sent in order later."""
    folder, cid = new_conversation(mirror)
    prompt = folder / "prompt.txt"
    mirror.emu.stop()
    expected = ["while down one", "while down two", "while down three"]
    for text in expected:
        prompt.write_text(text)
        wait_until(lambda: prompt.read_text() == "", 10, what=f"{text!r} to be taken")
    wait_until(lambda: "queued" in (folder / "status").read_text() or "error" in (folder / "status").read_text(), 10)
    mirror.emu.start()
    wait_until(lambda: mirror.emu.user_messages(cid) == expected, 40, what="the queued prompts on the server")
    mirror.wait_idle(folder, 20)
    assert mirror.emu.user_messages(cid) == expected


def test_a_whitespace_only_save_is_no_prompt(mirror: Mirror) -> None:
    """An empty or whitespace-only prompt.txt sends nothing; the next real prompt is the first message."""
    folder, cid = new_conversation(mirror)
    save_echo(folder, "   \n\t")
    save_echo(folder, "real prompt")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["real prompt"], 15)
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == ["real prompt"]


def test_a_prompt_written_while_convsync_was_stopped_is_sent_at_start(mirror: Mirror) -> None:
    """No event is needed: a non-empty prompt.txt found at start-up (quiet for a while) is taken."""
    folder, cid = new_conversation(mirror)
    mirror.stop()
    (folder / "prompt.txt").write_text("written offline")
    old = time.time() - 60
    os.utime(folder / "prompt.txt", (old, old))
    mirror.start()
    wait_until(lambda: mirror.emu.user_messages(cid) == ["written offline"], 15)
