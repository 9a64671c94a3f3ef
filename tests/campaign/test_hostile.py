"""The hostile and bad input corpus: what users drop and what a broken or hostile server answers.

Each case asserts its documented treatment (``docs/guarantees.md``, "Bad input"): a clear line in ``errors.log``
(with a fix) or in ``status``, nothing the user wrote lost, nothing written outside the root, and the daemon
still working afterwards (a later prompt is delivered).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from tests.campaign.rig import Rig, tmpfs
from tests.waiting import wait_until

KEY = "s4w_hostile-corpus-key"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def errors_log(folder: Path) -> str:
    try:
        return (folder / "errors.log").read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def still_works(rig: Rig, folder: Path, cid: str, earlier: list[str]) -> None:
    """The daemon keeps running: a normal prompt after the bad input is delivered, once, after the others."""
    assert rig.engine is not None and rig.engine.healthy()
    rig.save_prompt(folder, "still there?")
    rig.wait_delivered(cid, [*earlier, "still there?"])


def write_raw(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)


# --- prompts --------------------------------------------------------------------------------------------------


def test_a_10_mib_prompt_is_sent_exactly_once_and_mirrored(rig: Rig) -> None:
    """A 10 MiB prompt is one prompt: sent once, whole, and rendered into the transcript.

    It starts with the scripted agent's ``/files`` so the reply is short (an echo would stream 10 MiB back in
    five-character deltas, which tests the emulator, not convsync)."""
    rig.start()
    folder, cid = rig.conversation("Huge prompt")
    line = "0123456789abcdef" * 4 + "\n"
    text = "/files\n" + (line * (10 * 1024 * 1024 // len(line))).strip()
    rig.save_prompt(folder, text, timeout=60)
    rig.wait_delivered(cid, [text], timeout=120)
    rig.wait_mirrored(folder, cid, timeout=120)
    still_works(rig, folder, cid, [text])


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("binary", b"\x00\x01\x02PK\x03\x04" + bytes(range(256)) * 64),
        ("latin-1", "Grüße aus Köln, ça va?".encode("latin-1")),
    ],
)
def test_a_prompt_that_is_not_text_is_kept_aside_reported_and_not_sent(rig: Rig, label: str, data: bytes) -> None:
    """Bytes that are not UTF-8 text are moved to prompt.not-text.*.txt byte for byte, reported with the fix,
    and nothing is sent; prompt.txt is empty and ready again."""
    rig.start()
    folder, cid = rig.conversation(f"Not text {label}")
    write_raw(folder / "prompt.txt", data)
    kept = wait_until(lambda: list(folder.glob("prompt.not-text.*.txt")), 15, what="the bytes kept aside")
    assert kept[0].read_bytes() == data
    assert (folder / "prompt.txt").read_bytes() == b""
    log = errors_log(folder)
    assert "not UTF-8" in log and "fix:" in log, log
    assert rig.emu.user_messages(cid) == []
    still_works(rig, folder, cid, [])


def test_a_whitespace_only_prompt_is_no_prompt_and_is_left_as_written(rig: Rig) -> None:
    """Spaces, tabs and newlines only: nothing is sent and the file keeps what the user wrote."""
    rig.start()
    folder, cid = rig.conversation("Blank")
    blank = b"  \t\n\n   \r\n"
    write_raw(folder / "prompt.txt", blank)
    wait_until(lambda: (folder / "status").read_text().strip() == "idle", 10, what="an idle status")
    assert (folder / "prompt.txt").read_bytes() == blank
    assert rig.emu.user_messages(cid) == []
    (folder / "prompt.txt").write_text("")
    still_works(rig, folder, cid, [])


# --- inbox names and entries ------------------------------------------------------------------------------------

ODD_NAMES = [
    "line\nbreak.csv",
    "Ünïcødé 数据 🚀.csv",
    "-rf --no-preserve-root.csv",
    "x" * 251 + ".csv",  # 255 bytes, the longest name the filesystem allows
]


def test_odd_but_valid_inbox_names_upload_once_under_their_names(rig: Rig) -> None:
    """Names with a newline, unicode, leading dashes or 255 bytes are uploaded once and keep their name in
    files/; on the server a control character arrives percent-encoded (``%0A``), as browsers send it, because
    a multipart header cannot carry a raw line break."""
    rig.start()
    folder, cid = rig.conversation("Odd names")
    files = {name: rig.drop(folder, name, f"n\n{i}\n".encode()) for i, name in enumerate(ODD_NAMES)}
    on_server = {name.replace("\n", "%0A"): sha for name, sha in files.items()}
    wait_until(lambda: set(rig.emu.file_hashes(cid)) >= set(on_server), 30, what="every odd name on the server")
    rig.uploads_once(cid, on_server)
    wait_until(lambda: not any((folder / "inbox").iterdir()), 15, what="an empty inbox")
    for name in ODD_NAMES:
        assert (folder / "files" / name).is_file(), name
    still_works(rig, folder, cid, [])


def test_entries_that_cannot_be_uploaded_stay_in_the_inbox_and_are_reported(rig: Rig, tmp_path: Path) -> None:
    """A symlink out of the root, a FIFO, a folder and an empty file are left where they are, each reported once
    with a fix; the link's target is never read; a good file next to them still goes."""
    rig.start()
    folder, cid = rig.conversation("Odd entries")
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("secret outside the root\n")
    inbox = folder / "inbox"
    (inbox / "link.txt").symlink_to(outside)
    os.mkfifo(inbox / "pipe.csv")
    (inbox / "a folder").mkdir()
    (inbox / "empty.csv").write_bytes(b"")
    good = {"good.csv": rig.drop(folder, "good.csv", b"g\n1\n")}
    wait_until(lambda: "good.csv" in rig.emu.file_hashes(cid), 30, what="the good file")
    wait_until(lambda: errors_log(folder).count("inbox/") >= 4, 15, what="four inbox problems in errors.log")
    log = errors_log(folder)
    for name, words in [
        ("link.txt", "is a symbolic link"),
        ("pipe.csv", "is not a regular file"),
        ("a folder", "is a folder"),
        ("empty.csv", "is empty"),
    ]:
        assert f"inbox/{name} {words}" in log, (name, log)
    assert log.count("inbox/link.txt") == 1  # reported once, not on every pass
    assert set(rig.emu.file_hashes(cid)) == {"good.csv"}
    hashes = set(rig.emu.file_hashes(cid).values())
    assert hashlib.sha256(outside.read_bytes()).hexdigest() not in hashes
    # The server stores the good file before its answer reaches convsync, which then moves it to files/.
    left = ["a folder", "empty.csv", "link.txt", "pipe.csv"]
    wait_until(lambda: sorted(p.name for p in inbox.iterdir()) == left, 15, what=f"only {left} in the inbox")
    rig.uploads_once(cid, good)
    still_works(rig, folder, cid, [])


def _while_uploading(rig: Rig, folder: Path, action: Callable[[Path], None], path: Path) -> None:
    wait_until(lambda: (folder / "status").read_text().startswith("uploading"), 20, what="the upload to start")
    action(path)


def test_a_file_deleted_during_its_upload_is_not_recorded_as_moved(rig: Rig) -> None:
    """The user deletes a file while it is on the wire: no crash, nothing invented in files/, the daemon goes on."""
    rig.emu.set_faults([FaultRule(route="upload_files", latency=1.5, count=1)])
    rig.start()
    folder, cid = rig.conversation("Vanishing")
    data = os.urandom(24 * 1024 * 1024)
    rig.drop(folder, "vanish.bin", data)
    _while_uploading(rig, folder, Path.unlink, folder / "inbox" / "vanish.bin")
    wait_until(lambda: (folder / "status").read_text().strip() == "idle", 30, what="an idle status")
    assert not (folder / "files" / "vanish.bin").exists()
    assert not (folder / "inbox" / "vanish.bin").exists()
    still_works(rig, folder, cid, [])


def test_a_file_rewritten_during_its_upload_ends_on_the_server_with_its_final_bytes(rig: Rig) -> None:
    """A file truncated and rewritten mid-upload is uploaded again once stable: the server and files/ hold the
    final bytes, never a mix."""
    rig.emu.set_faults([FaultRule(route="upload_files", latency=1.5, count=1)])
    rig.start()
    folder, cid = rig.conversation("Rewritten")
    rig.drop(folder, "moving.bin", os.urandom(24 * 1024 * 1024))
    final = b"the final content\n" * 1000

    def rewrite(path: Path) -> None:
        write_raw(path, final)

    _while_uploading(rig, folder, rewrite, folder / "inbox" / "moving.bin")
    want = hashlib.sha256(final).hexdigest()
    wait_until(lambda: rig.emu.file_hashes(cid).get("moving.bin") == want, 30, what="the final bytes uploaded")
    wait_until((folder / "files" / "moving.bin").is_file, 15, what="files/moving.bin")
    assert (folder / "files" / "moving.bin").read_bytes() == final
    still_works(rig, folder, cid, [])


def test_an_unreadable_inbox_file_is_left_and_reported_while_the_rest_goes(emu: EmulatorServer, tmp_path: Path) -> None:
    """A file convsync may not read (mode 000; convsync runs without CAP_DAC_OVERRIDE, as a non-root user would)
    stays in inbox/ with an errors.log line and its fix; the readable file next to it is uploaded.

    Root reads any file, so ``convsync sync`` runs under ``setpriv --bounding-set=-dac_override,-dac_read_search``:
    still uid 0, but file permissions apply to it as they do to every user.
    """
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / ".convsync-root").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n  url: {emu.base_url}\n  api_key_env: CONVSYNC_API_KEY\nroot: {root}\nstate_dir: {state}\n"
    )
    aid = emu.agent_id("Demo Agent")
    cid = emu.create_conversation(aid, "Permissions")
    env = {**os.environ, "CONVSYNC_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    command = [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        sys.executable,
        "-m",
        "convsync",
        "sync",
        "--config",
        str(config),
    ]
    first = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    folder = root / "Demo Agent" / "Permissions"
    secret, fine = folder / "inbox" / "secret.csv", folder / "inbox" / "fine.csv"
    secret.write_text("a,b\n1,2\n")
    fine.write_text("c,d\n3,4\n")
    secret.chmod(0)
    past = (1_600_000_000, 1_600_000_000)  # `convsync sync` takes inbox files by their age
    os.utime(secret, past)
    os.utime(fine, past)
    second = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert set(emu.file_hashes(cid)) == {"fine.csv"}
    assert secret.exists() and not fine.exists()
    log = errors_log(folder)
    assert "inbox/secret.csv cannot be read" in log and "chmod" in log, log


# --- a full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB disk of its own, to fill."""
    with tmpfs(tmp_path / "small-disk", "2m") as mount:
        yield mount


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes with one file; delete it to free the space again."""
    filler = disk / ".filler"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    write_raw(filler, b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_while_a_reply_streams_loses_nothing_and_heals(
    emu: EmulatorServer, tmp_path: Path, small_disk: Path
) -> None:
    """The disk fills while a long reply streams into transcript.md: the problem shows in `convsync status`, the
    prompt is sent once, the stream is still read to its end (so the server keeps the whole reply), and once
    space is free the transcript is exactly the server's messages again."""
    rig = Rig.make(emu, tmp_path, root=small_disk / "root")
    try:
        rig.start()
        folder, cid = rig.conversation("Full disk")
        filler = fill(small_disk, leave=6 * 1024)
        text = "/slow 400 2 " + " ".join(["fill the disk"] * 20)
        (folder / "prompt.txt").write_text(text + "\n")
        rig.wait_delivered(cid, [text])

        def reported() -> bool:
            report = rig.status_report()
            row = next(c for c in report.conversations if c.id == cid)
            return bool(row.last_error and "No space left" in row.last_error)

        wait_until(reported, 30, what="`convsync status` to show the full disk")
        filler.unlink()
        rig.wait_mirrored(folder, cid, timeout=60)
        reply = rig.messages(cid)[1:]
        assert [(m.role, m.complete) for m in reply] == [("agent", True)] and reply[0].text, reply
        still_works(rig, folder, cid, [text])
    finally:
        rig.stop()


def test_a_full_disk_while_exporting_parquet_leaves_no_torn_file_and_heals(
    emu: EmulatorServer, tmp_path: Path, small_disk: Path
) -> None:
    """No space for a data frame's Parquet: no torn or temp file is left, the error is reported, and the export
    succeeds once space is free."""
    rig = Rig.make(emu, tmp_path, root=small_disk / "root")
    try:
        rig.start()
        folder, cid = rig.conversation("Full disk frames")
        rig.save_prompt(folder, "before")
        rig.wait_mirrored(folder, cid)
        filler = fill(small_disk, leave=64 * 1024)
        rig.save_prompt(folder, "/bigframe wide 40000")
        rig.wait_delivered(cid, ["before", "/bigframe wide 40000"])
        wait_until(
            lambda: "No space left" in errors_log(folder) or "No space left" in _status(folder),
            30,
            what="the full disk reported",
        )
        frames = folder / "data-frames"
        assert not (frames / "wide.parquet").exists()  # never a torn file under the final name
        filler.unlink()
        path = frames / "wide.parquet"
        wait_until(path.is_file, 60, what="the export once space is free")
        assert pq.read_table(path).num_rows == 40000
        rig.wait_mirrored(folder, cid)
        assert not [p.name for p in frames.iterdir() if p.name.startswith(".convsync-tmp-")]
    finally:
        rig.stop()


def _status(folder: Path) -> str:
    try:
        return (folder / "status").read_text()
    except FileNotFoundError:
        return ""


# --- what the server answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "body"),
    [
        ("malformed JSON", '{"next": null, "data": [{"message_id": '),
        ("wrong types", json.dumps({"next": None, "has_more": False, "data": [{"message_id": 5, "content": 7}]})),
        ("not an object", json.dumps(["a", "list", "of", "strings"])),
        ("huge", "[" + " " * (40 * 1024 * 1024) + "{]"),
    ],
)
def test_an_unusable_answer_is_reported_retried_and_nothing_is_lost(rig: Rig, label: str, body: str) -> None:
    """A 200 answer to the messages list that is malformed, of wrong types, or huge: the status says the server
    answered something unusable, the queued prompt waits, and everything goes once the server is sane again."""
    rig.start()
    folder, cid = rig.conversation(f"Unusable {label}")
    rig.emu.set_faults([FaultRule(route="list_messages", status=200, body="plain", message=body)])
    (folder / "prompt.txt").write_text("survive this\n")
    wait_until(
        lambda: "unusable" in _status(folder) or "not JSON" in _status(folder),
        30,
        what="the status to name the unusable answer",
    )
    assert "fix:" in errors_log(folder)
    assert rig.engine is not None and rig.engine.healthy()
    rig.emu.clear_faults()
    rig.wait_delivered(cid, ["survive this"])
    rig.wait_mirrored(folder, cid)
    still_works(rig, folder, cid, ["survive this"])


class HostileFiles(httpx.BaseTransport):
    """The real emulator, except that the file list also names files whose refs try to leave ``files/``."""

    def __init__(self, inner: httpx.BaseTransport, refs: dict[str, bytes]) -> None:
        self.inner = inner
        self.refs = refs

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/files"):
            response = self.inner.handle_request(request)
            response.read()
            response.close()
            listing = json.loads(response.content)
            template = listing[0] if listing else None
            for ref, data in self.refs.items():
                item = dict(template or {})
                item.update(
                    file_ref=ref,
                    file_id=str(uuid.uuid5(uuid.NAMESPACE_URL, ref)),
                    file_hash=hashlib.sha256(data).hexdigest(),
                    file_size_raw=len(data),
                )
                listing.append(item)
            return httpx.Response(200, json=listing)
        if request.method == "GET" and path.endswith("/files/download"):
            ref = request.url.params.get("file_ref", "")
            if ref in self.refs:
                return httpx.Response(200, content=self.refs[ref])
        return self.inner.handle_request(request)


def test_hostile_file_refs_from_the_server_never_leave_files(rig: Rig, tmp_path: Path) -> None:
    """File refs with ``..``, absolute paths, separators, control characters: each lands under a safe name
    inside files/, and nothing appears outside the root."""
    refs = {
        "../../../escaped.txt": b"one",
        "/etc/convsync-owned": b"two",
        "..": b"three",
        "sub/../../x.txt": b"four",
        "back\\slash\\..\\..\\y.txt": b"five",
        "new\nline\x00nul.txt": b"six",
        ".hidden": b"seven",
    }
    rig.start(transport=HostileFiles(rig.transport, refs))
    # One real file, so the listing has a genuine template to copy.
    folder, cid = rig.conversation("Hostile refs")
    rig.drop(folder, "real.csv", b"r\n1\n")
    wait_until(lambda: "real.csv" in rig.emu.file_hashes(cid), 30, what="the real upload")
    files = folder / "files"
    wait_until(lambda: len(list(files.iterdir())) >= 1 + len(refs), 30, what="every file downloaded")
    contents = sorted(p.read_bytes() for p in files.iterdir() if p.is_file())
    assert contents == sorted([b"r\n1\n", *refs.values()])
    for p in files.iterdir():
        assert p.parent == files and not p.name.startswith(".") and "/" not in p.name, p
    before_outside = {p for p in tmp_path.rglob("*") if rig.root not in p.parents and p != rig.root}
    assert not [p for p in before_outside if p.name in ("escaped.txt", "convsync-owned", "x.txt", "y.txt")]
    assert not Path("/etc/convsync-owned").exists()
    still_works(rig, folder, cid, [])


def test_hostile_agent_conversation_and_frame_names_stay_inside_the_root(rig: Rig, tmp_path: Path) -> None:
    """Names made of ``..``, slashes, NUL, newlines or 300 characters become safe, distinct folders and files."""
    hostile = ["../../../outside", "/etc", "..", ".", "a/b\\c", "nul\x00byte", "new\nline", "é" * 300, "CON"]
    evil_agent = rig.emu.add_agent("../../Agent Escape")
    for name in hostile:
        rig.emu.create_conversation(rig.aid, name)
    rig.emu.create_conversation(evil_agent, "../../../inside the evil agent")
    rig.start()
    aid = rig.aid
    wait_until(
        lambda: len([p for p in rig.agent_dir.iterdir() if p.is_dir()]) >= len(hostile),
        30,
        what="a folder per hostile conversation",
    )
    folder, cid = rig.conversation("Frames")
    frame_prompts = [f"/bigframe {name} 10" for name in (".hidden", "'a\\b'", "CON", "é" * 200)]
    # Names no URL can address: "/" is decoded by the server before routing (404) and a ".." segment names
    # the conversation itself (405). Each is reported once in errors.log; nothing is written for them.
    unreachable = ["../../../frame-escape", ".."]
    frame_prompts += [f"/bigframe {name} 10" for name in unreachable]
    for text in frame_prompts:
        rig.save_prompt(folder, text)
    exported = folder / "data-frames"
    wait_until(lambda: len(list(exported.glob("*.parquet"))) == 4, 30, what="four frames exported")
    for p in exported.iterdir():
        assert pq.read_table(p).num_rows == 10 and not p.name.startswith("."), p
    for name in unreachable:
        wait_until(
            lambda n=name: f"data frame {n!r} could not be exported" in errors_log(folder),
            15,
            what=f"frame {name!r} reported",
        )
    outside = [p for p in tmp_path.rglob("*") if "outside" in p.name or "escape" in p.name.lower()]
    assert all(rig.root in p.parents for p in outside), outside
    folders = [p for p in rig.agent_dir.iterdir() if p.is_dir()]
    ids = {(p / ".conversation").read_text().strip() for p in folders if (p / ".conversation").is_file()}
    assert {c["id"] for c in rig.emu.conversations(aid)} <= ids
    for p in rig.root.rglob("*"):
        assert "\n" not in p.name and "\x00" not in p.name, p
        assert re.fullmatch(r"\.?[^/]+", p.name), p
    still_works(rig, folder, cid, frame_prompts)
