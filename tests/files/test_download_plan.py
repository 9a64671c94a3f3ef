"""files/ planning: which remote files are downloaded, and how their names are made safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from convsync.api.models import RemoteFile
from convsync.mirror.filesync import (
    download,
    local_name_for,
    plan_downloads,
    remote_version,
    remove_stale_temps,
)
from convsync.mirror.names import OutsideRoot, keys_of


def remote(ref: str, sha: str | None = "a" * 64, file_id: str = "f1", size: int = 3) -> RemoteFile:
    return RemoteFile(file_ref=ref, file_id=file_id, size=size, sha256=sha)


def test_a_new_remote_file_is_downloaded() -> None:
    """A file_ref never seen locally is planned for download."""
    assert plan_downloads([remote("out.csv")], {}) == [remote("out.csv")]


def test_a_file_with_a_new_hash_is_downloaded_again() -> None:
    """A known file whose hash changed on the server is downloaded again."""
    assert plan_downloads([remote("out.csv", sha="b" * 64)], {"out.csv": "a" * 64}) == [remote("out.csv", "b" * 64)]


def test_an_uploaded_file_is_not_downloaded_back() -> None:
    """A file the mirror uploaded is known with the server's version of it, so it is not fetched back."""
    uploaded = remote("mine.pdf")
    assert plan_downloads([uploaded], {"mine.pdf": remote_version(uploaded)}) == []


def test_without_a_hash_the_file_id_decides() -> None:
    """When the server gives no hash, a replacement (new file id) is still noticed."""
    old, new = remote("x", sha=None, file_id="1"), remote("x", sha=None, file_id="2")
    assert plan_downloads([old], {"x": remote_version(old)}) == []
    assert plan_downloads([new], {"x": remote_version(old)}) == [new]


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/abs/path", "a\\b", "..", ".", ".hidden", "x\x00y", "é" * 300])
def test_hostile_file_refs_become_one_visible_name(ref: str) -> None:
    """A file_ref from the server becomes one safe, visible path component."""
    name = local_name_for(ref)
    assert name not in ("", ".", "..") and "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name.encode()) <= 255


def test_colliding_refs_get_distinct_names_keeping_the_extension() -> None:
    """Two refs whose safe names coincide get distinct local names, the counter before the extension."""
    first = local_name_for("a/b.csv")
    assert local_name_for("a:b.csv", keys_of([first])) == "a_b (2).csv"


def test_download_refuses_a_name_outside_files(tmp_path: Path) -> None:
    """A local name that would leave files/ is refused before anything is fetched."""
    with pytest.raises(OutsideRoot):
        download(None, "a", "c", remote("x"), tmp_path / "files", local_name="../escape")  # type: ignore[arg-type]
    assert not (tmp_path / "escape").exists()


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    """Temp files a crash left in files/ are cleaned up; the user's files are kept."""
    (tmp_path / ".convsync-tmp-1234abcd-report.csv").write_text("half")
    (tmp_path / "report.csv").write_text("whole")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".convsync-tmp-1234abcd-report.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]
