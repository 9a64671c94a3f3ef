"""Conversation files: upload (multipart, repeated ``files``), list, replace, download, validation."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from convsync.emulator import EmulatorServer

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def upload(api: httpx.Client, conv: str, *files: tuple[str, bytes]) -> httpx.Response:
    return api.post(f"{conv}/files", files=[("files", (name, data)) for name, data in files])


def test_new_conversation_has_an_empty_bare_list(api: httpx.Client, conv: str) -> None:
    """GET files answers a bare JSON array, empty at first."""
    assert api.get(f"{conv}/files").json() == []


def test_upload_answers_the_file_objects(api: httpx.Client, conv: str, aid: str, cid: str) -> None:
    """POST files answers 200 with one object per file, in the private UploadedFile shape."""
    response = upload(api, conv, ("report.csv", b"a,b\n1,2\n"))
    assert response.status_code == 200
    [item] = response.json()
    assert item["file_ref"] == "report.csv"
    assert item["file_hash"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert item["file_size_raw"] == 8
    assert item["mime_type"] == "text/csv"
    assert item["agent_id"] == aid and item["thread_id"] == cid
    assert Z_TIME.match(item["created_at"])
    assert item["embedded"] is False and item["file_url"] is None and item["file_path"].startswith("file://")


def test_several_files_in_one_request(api: httpx.Client, conv: str) -> None:
    """The ``files`` field may repeat; each part becomes a file, listed in upload order."""
    upload(api, conv, ("a.txt", b"A"), ("b.json", b"{}"))
    listed = api.get(f"{conv}/files").json()
    assert [(f["file_ref"], f["mime_type"]) for f in listed] == [
        ("a.txt", "text/plain"),
        ("b.json", "application/json"),
    ]


def test_unknown_extension_is_octet_stream(api: httpx.Client, conv: str) -> None:
    """A name without a known extension gets ``application/octet-stream``."""
    [item] = upload(api, conv, ("blob.weird", b"\x00\x01")).json()
    assert item["mime_type"] == "application/octet-stream"


def test_same_name_replaces_with_new_id_but_keeps_created_at(api: httpx.Client, conv: str) -> None:
    """Uploading an existing name replaces it: new file_id and hash, same created_at, still one entry."""
    [first] = upload(api, conv, ("notes.txt", b"v1")).json()
    [second] = upload(api, conv, ("notes.txt", b"version two")).json()
    assert second["file_id"] != first["file_id"]
    assert second["created_at"] == first["created_at"]
    assert second["file_size_raw"] == len(b"version two")
    assert [f["file_id"] for f in api.get(f"{conv}/files").json()] == [second["file_id"]]


def test_download_returns_the_bytes_with_a_type_from_the_extension(api: httpx.Client, conv: str) -> None:
    """The download route streams the bytes back with Content-Type from the name."""
    payload = bytes(range(256)) * 300
    upload(api, conv, ("table.csv", payload))
    response = api.get(f"{conv}/files/download/", params={"file_ref": "table.csv"})
    assert response.status_code == 200
    assert response.content == payload
    assert response.headers["content-type"] == "text/csv; charset=utf-8"


def test_download_is_streamed_without_content_length(api: httpx.Client, conv: str) -> None:
    """Downloads are chunked, with no Content-Length (a streamed response)."""
    upload(api, conv, ("x.bin", b"x" * 200_000))
    response = api.get(f"{conv}/files/download", params={"file_ref": "x.bin"})
    assert "content-length" not in response.headers
    assert response.headers.get("transfer-encoding") == "chunked"


def test_download_of_a_replaced_file_gives_the_new_bytes(api: httpx.Client, conv: str) -> None:
    """After a same-name upload the download serves the new content."""
    upload(api, conv, ("n.txt", b"old"))
    upload(api, conv, ("n.txt", b"new"))
    assert api.get(f"{conv}/files/download/", params={"file_ref": "n.txt"}).content == b"new"


def test_unknown_file_is_404(api: httpx.Client, conv: str) -> None:
    """Downloading a name that does not exist gives the 404 envelope."""
    response = api.get(f"{conv}/files/download/", params={"file_ref": "ghost.txt"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_download_without_file_ref_is_422(api: httpx.Client, conv: str) -> None:
    """``file_ref`` is a required query parameter."""
    response = api.get(f"{conv}/files/download/")
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Request validation failed: query -> file_ref: Field required"


def test_non_ascii_names_round_trip(api: httpx.Client, conv: str) -> None:
    """A UTF-8 file name is kept exactly and downloads by that name."""
    upload(api, conv, ("Übersicht März 2026.txt", b"ok"))
    assert [f["file_ref"] for f in api.get(f"{conv}/files").json()] == ["Übersicht März 2026.txt"]
    assert api.get(f"{conv}/files/download/", params={"file_ref": "Übersicht März 2026.txt"}).content == b"ok"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.txt", "nul\x00.txt"])
def test_invalid_names_are_400_and_store_nothing(api: httpx.Client, conv: str, name: str) -> None:
    """Empty names, ``.``/``..``, ``/`` and NUL are rejected with 400 ``bad_request``."""
    boundary = "b0undary"
    disposition = f'form-data; name="files"; filename="{name}"'.encode()
    body = (
        f"--{boundary}\r\n".encode()
        + b"Content-Disposition: "
        + disposition
        + b"\r\n\r\ndata\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    response = api.post(
        f"{conv}/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert api.get(f"{conv}/files").json() == []


def test_duplicate_names_in_one_request_are_400(api: httpx.Client, conv: str) -> None:
    """Two parts with the same name in one upload are rejected and nothing is stored."""
    response = upload(api, conv, ("same.txt", b"1"), ("same.txt", b"2"))
    assert response.status_code == 400
    assert api.get(f"{conv}/files").json() == []


def test_upload_without_files_is_422(api: httpx.Client, conv: str) -> None:
    """A multipart body without a ``files`` part gives 422 ``body -> files: Field required``."""
    response = api.post(f"{conv}/files", files=[("other", ("a.txt", b"x"))])
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Request validation failed: body -> files: Field required"


def test_deleting_the_conversation_deletes_its_files(
    api: httpx.Client, emu: EmulatorServer, conv: str, cid: str
) -> None:
    """Deleting a conversation removes its files from disk too."""
    upload(api, conv, ("gone.txt", b"bye"))
    blob = emu.file_path(cid, "gone.txt")
    assert blob.exists()
    api.delete(conv)
    assert not blob.exists()


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_large_upload_and_download_stay_out_of_memory(
    api: httpx.Client, emu: EmulatorServer, conv: str, cid: str
) -> None:
    """A 96 MiB upload and download through the in-process server raise peak RSS by far less than the size."""
    if not _peak_rss_reset():
        pytest.skip("needs /proc/self/clear_refs to reset the peak RSS")
    size, block = 96 * 1024 * 1024, bytes(range(256)) * 4096
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    baseline = _peak_rss_bytes()
    boundary = "bigb0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def multipart() -> Iterator[bytes]:
        yield head
        yield from body()
        yield tail

    response = api.post(
        f"{conv}/files",
        content=multipart(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.json()[0]["file_hash"] == digest.hexdigest()
    downloaded = hashlib.sha256()
    with api.stream("GET", f"{conv}/files/download/", params={"file_ref": "big.bin"}) as stream:
        for chunk in stream.iter_bytes():
            downloaded.update(chunk)
    assert downloaded.hexdigest() == digest.hexdigest()
    assert emu.file_hashes(cid)["big.bin"] == digest.hexdigest()
    assert _peak_rss_bytes() - baseline < 32 * 1024 * 1024
