"""`convsync prompt DIR` without a daemon: what it does with the editor's draft and prompt.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from convsync.errors import ConfigError
from convsync.promptcmd import run_prompt


def conversation(tmp_path: Path) -> Path:
    folder = tmp_path / "Agent" / "Chat"
    folder.mkdir(parents=True)
    (folder / ".conversation").write_text("c-1\n")
    (folder / "prompt.txt").write_text("")
    return folder


def editor_writing(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """$VISUAL is a real program that writes ``text`` into the file it is given, as an editor would."""
    monkeypatch.setenv("VISUAL", f'sh -c \'printf %s "$0" > "$1"\' {text!r}' if text else "true")


def test_a_saved_draft_goes_into_prompt_txt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The editor exits with text: prompt.txt holds it (sent once a daemon takes it)."""
    folder = conversation(tmp_path)
    editor_writing(monkeypatch, "Hello from a draft")
    lines: list[str] = []
    assert run_prompt(folder, say=lines.append, wait=0) == 0
    assert (folder / "prompt.txt").read_text() == "Hello from a draft"
    assert "it is sent once convsync runs" in lines[-1]


def test_an_empty_draft_sends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The editor exits without writing: prompt.txt stays empty."""
    folder = conversation(tmp_path)
    editor_writing(monkeypatch, "")
    lines: list[str] = []
    assert run_prompt(folder, say=lines.append, wait=0) == 0
    assert (folder / "prompt.txt").read_text() == ""
    assert lines == ["convsync: the draft is empty: nothing sent"]


def test_an_unsent_prompt_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prompt.txt still holds a prompt: exit 75, it is left alone, and the draft is kept where it says."""
    folder = conversation(tmp_path)
    (folder / "prompt.txt").write_text("waiting to be taken")
    editor_writing(monkeypatch, "the new one")
    lines: list[str] = []
    assert run_prompt(folder, say=lines.append, wait=0) == 75
    assert (folder / "prompt.txt").read_text() == "waiting to be taken"
    kept = Path(lines[-1].removeprefix("convsync: your draft is kept in "))
    assert kept.read_text() == "the new one"


def test_a_folder_that_is_no_conversation_is_refused(tmp_path: Path) -> None:
    """Without a .conversation file the command refuses (a config error, exit 78) before opening an editor."""
    with pytest.raises(ConfigError):
        run_prompt(tmp_path, say=lambda _: None, wait=0)
