"""Real editors (vim, neovim, emacs, nano from Debian) in tmux, set up as docs/editors.md says: two prompts saved
in one editor session reach the server exactly once each; `convsync prompt` with a real editor sends one."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import Mirror, chat
from tests.tmux import Tmux
from tests.waiting import wait_until

DOC = Path(__file__).resolve().parents[2] / "docs" / "editors.md"


def doc_settings(heading: str, language: str) -> str:
    """The settings block under ``### heading`` in docs/editors.md: the test configures what the docs say."""
    section = DOC.read_text(encoding="utf-8").split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"no {language} block under '### {heading}' in {DOC}"
    return found.group(1)


@dataclass(frozen=True)
class Editor:
    name: str
    argv: Callable[[Path], list[str]]  # the command line, given the folder for its settings file
    ready: str  # on the screen once the editor shows prompt.txt
    save: Callable[[Tmux], None]
    reloads: bool  # the documented settings make it reload the emptied file


def settings_file(folder: Path, name: str, text: str) -> Path:
    path = folder.parent.parent.parent / name  # outside the root
    path.write_text(text)
    return path


def vim_save(t: Tmux) -> None:
    t.keys("Escape")
    t.type(":w")
    t.keys("Enter")


EDITORS = [
    Editor(
        "vim",
        lambda f: ["vim", "-N", "-u", str(settings_file(f, "vimrc", doc_settings("vim", "vim"))), "-i", "NONE"],
        "prompt.txt",
        vim_save,
        True,
    ),
    Editor(
        "nvim",
        lambda f: ["nvim", "-u", str(settings_file(f, "init.vim", doc_settings("neovim", "vim"))), "-i", "NONE"],
        "prompt.txt",
        vim_save,
        True,
    ),
    Editor(
        "emacs",
        lambda f: ["emacs", "-nw", "-Q", "-l", str(settings_file(f, "init.el", doc_settings("emacs", "elisp")))],
        "prompt.txt",
        lambda t: t.keys("C-x", "C-s"),
        True,
    ),
    Editor(
        "nano", lambda f: ["nano", "--ignorercfiles"], "GNU nano", lambda t: (t.keys("C-o"), t.keys("Enter")), False
    ),
]


@pytest.fixture
def terminals() -> Iterator[list[Tmux]]:
    opened: list[Tmux] = []
    yield opened
    for t in opened:
        t.close()


@pytest.mark.parametrize("editor", EDITORS, ids=[e.name for e in EDITORS])
def test_two_prompts_in_one_editor_session_are_sent_once_each(
    mirror: Mirror, terminals: list[Tmux], editor: Editor
) -> None:
    """Type a prompt, save, type the next one in the same session, save: the server gets exactly the two."""
    if shutil.which(editor.name) is None:
        pytest.fail(f"{editor.name} is not installed: .ci/run installs it (apt-get install vim neovim emacs-nox nano)")
    folder, cid = chat(mirror, f"Edited with {editor.name}")
    first, second = f"First prompt from {editor.name}.", f"Second prompt from {editor.name}."
    t = Tmux([*editor.argv(folder), "prompt.txt"], folder, {"TERM": "xterm-256color", "HOME": str(folder.parent)})
    terminals.append(t)
    wait_until(lambda: editor.ready in t.screen(), 15, what=f"{editor.name} to start")
    if editor.name in ("vim", "nvim"):
        t.type("i")
    t.type(first)
    editor.save(t)
    wait_until(lambda: mirror.emu.user_messages(cid) == [first], 15, what="the first prompt on the server")
    wait_until(lambda: (folder / "prompt.txt").read_text() == "", 10, what="prompt.txt emptied")
    if editor.reloads:
        # The documented settings reload the emptied file: the buffer shows nothing of the first prompt.
        wait_until(lambda: first not in t.screen(), 10, what=f"{editor.name} to reload the emptied prompt.txt")
        if editor.name in ("vim", "nvim"):
            t.type("i")
        t.type(second)
        editor.save(t)
    else:
        # nano cannot reload: the old text stays, the next prompt is typed below it, nano warns and is told yes.
        t.keys("End")
        t.type("\n" + second)
        editor.save(t)
        wait_until(lambda: "continue saving?" in t.screen(), 10, what="nano's question")
        t.type("y")
    wait_until(lambda: len(mirror.emu.user_messages(cid)) >= 2, 15, what="the second prompt on the server")
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == [first, second]
    errors = folder / "errors.log"
    # Only nano needed the resend protection; the reloading editors never wrote the old text back.
    assert ("began with the previous prompt" in (errors.read_text() if errors.exists() else "")) is not editor.reloads


def test_convsync_prompt_sends_what_the_editor_saved(mirror: Mirror, terminals: list[Tmux]) -> None:
    """`convsync prompt DIR` with EDITOR=vim (driven in tmux): the prompt is sent once the editor exits."""
    folder, cid = chat(mirror, "Drafted")
    env = {"EDITOR": "vim -N -u NONE -i NONE", "VISUAL": "", "TERM": "xterm-256color", "HOME": str(folder.parent)}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    t = Tmux([sys.executable, "-m", "convsync", "prompt", str(folder)], folder, env)
    terminals.append(t)
    wait_until(lambda: "prompt.txt" in t.screen(), 15, what="vim on the draft")
    assert mirror.emu.user_messages(cid) == []
    t.type("iWritten in a draft.")
    t.keys("Escape")
    t.type(":wq")
    t.keys("Enter")
    wait_until(lambda: mirror.emu.user_messages(cid) == ["Written in a draft."], 15, what="the prompt on the server")
    wait_until(lambda: not t.alive() or "convsync: sent" in t.screen(), 15, what="convsync prompt to finish")
    mirror.wait_idle(folder)
    assert mirror.emu.user_messages(cid) == ["Written in a draft."]
