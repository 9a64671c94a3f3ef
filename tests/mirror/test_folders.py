"""The tree on disk: building conversation folders in a batch, reading markers (real folders, no server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convsync.mirror.atomic import TEMP_PREFIX, read_regular
from convsync.mirror.folders import Created, create_conversation_folders, init_root, read_marker
from convsync.mirror.names import OutsideRoot


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    init_root(tmp_path / "root")
    path = tmp_path / "root" / "Agent"
    path.mkdir()
    return path


def test_a_built_folder_is_complete_and_nothing_is_left_under_a_temp_name(agent_dir: Path) -> None:
    """Every folder of a batch holds its marker, an empty prompt.txt and transcript.md, status "idle" and the
    three subfolders; no hidden temp folder stays behind."""
    root = agent_dir.parent
    results = create_conversation_folders(root, agent_dir, [("One", "c1"), ("Two", "c2")])
    assert results == [Created("One", agent_dir / "One"), Created("Two", agent_dir / "Two")]
    for name, cid in (("One", "c1"), ("Two", "c2")):
        folder = agent_dir / name
        assert read_marker(folder / ".conversation") == cid
        assert (folder / "prompt.txt").read_bytes() == b""
        assert (folder / "transcript.md").read_bytes() == b""
        assert (folder / "status").read_text() == "idle\n"
        assert all((folder / sub).is_dir() for sub in ("inbox", "files", "data-frames"))
    assert sorted(p.name for p in agent_dir.iterdir()) == ["One", "Two"]


def test_a_name_the_user_took_meanwhile_gets_a_numbered_variant(agent_dir: Path) -> None:
    """The user's own folder of that name is left as it is; the conversation gets " (2)"."""
    mine = agent_dir / "Report"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    [result] = create_conversation_folders(agent_dir.parent, agent_dir, [("Report", "c1")])
    assert result == Created("Report (2)", agent_dir / "Report (2)")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert read_marker(agent_dir / "Report (2)" / ".conversation") == "c1"


def test_a_temp_folder_left_by_a_crash_is_rebuilt(agent_dir: Path) -> None:
    """A half-built folder of the same conversation (the process died while building it) is replaced."""
    stale = agent_dir / f"{TEMP_PREFIX}c1"
    stale.mkdir()
    (stale / ".conversation").write_text("c1\n")
    [result] = create_conversation_folders(agent_dir.parent, agent_dir, [("One", "c1")])
    assert result == Created("One", agent_dir / "One")
    assert not stale.exists()


def test_a_hostile_id_fails_alone(agent_dir: Path) -> None:
    """An id that is no file name is refused; the other folders of the batch are built all the same."""
    results = create_conversation_folders(agent_dir.parent, agent_dir, [("Evil", "../../x"), ("Fine", "c2")])
    assert isinstance(results[0], OutsideRoot)
    assert results[1] == Created("Fine", agent_dir / "Fine")
    assert sorted(p.name for p in agent_dir.iterdir()) == ["Fine"]


def test_read_marker_takes_only_a_regular_file(tmp_path: Path) -> None:
    """A symlink, a folder or a FIFO named like a marker is no marker (it could point anywhere or block)."""
    real = tmp_path / "real"
    real.write_text("abc\nrest\n")
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    assert read_marker(real) == "abc"
    assert [read_marker(tmp_path / n) for n in ("link", "dir", "fifo", "missing")] == [None] * 4


def test_read_regular_returns_the_size_and_the_bytes_after_the_offset(tmp_path: Path) -> None:
    """The transcript's tail is read from the committed offset; an offset past the end reads nothing."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    assert read_regular(path, 4) == (10, b"456789")
    assert read_regular(path, 12) == (10, b"")
    assert read_regular(tmp_path / "missing") is None
