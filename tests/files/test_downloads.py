"""files/: the agent's output files downloaded from the emulator, streamed, verified, renamed into place."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest

from convsync.errors import ProtocolError
from convsync.mirror.filesync import download, plan_downloads, remote_version
from tests.files.conftest import Conv


def sync_files(conv: Conv, known: dict[str, str]) -> list[str]:
    """One pass of what the mirror does for files/: plan, download, record. Returns the refs fetched."""
    fetched = []
    for remote in plan_downloads(conv.client.list_files(conv.aid, conv.cid), known):
        download(conv.client, conv.aid, conv.cid, remote, conv.files)
        known[remote.file_ref] = remote_version(remote)
        fetched.append(remote.file_ref)
    return fetched


def test_agent_output_files_appear_with_matching_hashes(conv: Conv) -> None:
    """Files the agent wrote appear in files/ with the server's sha256; a second pass downloads nothing."""
    conv.say("/write summary.md # Summary")
    conv.say("/bigfile data.bin 3")
    known: dict[str, str] = {}
    assert sorted(sync_files(conv, known)) == ["data.bin", "summary.md"]
    local = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in conv.files.iterdir()}
    assert local == conv.emu.file_hashes(conv.cid)
    gets_before = conv.requests("GET", "files/download")
    assert sync_files(conv, known) == []
    assert conv.requests("GET", "files/download") == gets_before


def test_a_file_changed_on_the_server_is_downloaded_again(conv: Conv) -> None:
    """When the agent rewrites a file (new hash), the next pass replaces the local copy."""
    conv.say("/write answer.txt first")
    known: dict[str, str] = {}
    sync_files(conv, known)
    conv.say("/write answer.txt second version")
    assert sync_files(conv, known) == ["answer.txt"]
    assert (conv.files / "answer.txt").read_text() == "second version"


def test_a_hash_mismatch_leaves_the_old_file_alone(conv: Conv) -> None:
    """Bytes that do not match the listed sha256 are refused; the previous file and no temp file remain."""
    conv.say("/write report.txt the real text")
    (remote,) = conv.client.list_files(conv.aid, conv.cid)
    (conv.files / "report.txt").write_text("previous")
    lying = dataclasses.replace(remote, sha256="0" * 64, size=remote.size + 1)
    with pytest.raises(ProtocolError):
        download(conv.client, conv.aid, conv.cid, lying, conv.files)
    assert [p.name for p in conv.files.iterdir()] == ["report.txt"]
    assert (conv.files / "report.txt").read_text() == "previous"


def test_a_file_already_in_place_is_not_fetched(conv: Conv) -> None:
    """After a crash between the rename and the state write, the bytes in place are kept, not refetched."""
    conv.say("/write same.txt identical")
    (remote,) = conv.client.list_files(conv.aid, conv.cid)
    (conv.files / "same.txt").write_text("identical")
    download(conv.client, conv.aid, conv.cid, remote, conv.files)
    assert conv.requests("GET", "files/download") == 0


def test_a_big_download_streams_with_progress(conv: Conv) -> None:
    """A multi-MiB file arrives whole, and progress reaches the byte count."""
    conv.say("/bigfile big.bin 8")
    (remote,) = conv.client.list_files(conv.aid, conv.cid)
    seen: list[int] = []
    path = download(conv.client, conv.aid, conv.cid, remote, conv.files, progress=lambda d, t: seen.append(d))
    assert os.path.getsize(path) == 8 * 1024 * 1024 == seen[-1]


def test_a_hostile_file_ref_stays_inside_files(conv: Conv) -> None:
    """A file_ref with path tricks is written under a safe name inside files/."""
    conv.say("/write ..hidden..txt sneaky")
    (remote,) = conv.client.list_files(conv.aid, conv.cid)
    path = download(conv.client, conv.aid, conv.cid, remote, conv.files)
    assert path.parent == conv.files and not path.name.startswith(".")
    assert path.read_text() == "sneaky"
