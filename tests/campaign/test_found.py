"""Bugs the campaigns found, each pinned by a small deterministic test (the campaign only finds them by chance)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from convsync.api.client import AgentClient
from convsync.config import Config
from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from convsync.mirror.engine import Engine
from convsync.mirror.folders import init_root
from tests.campaign.rig import Rig
from tests.waiting import wait_until

KEY = "s4w_found-key"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def test_folders_made_in_quick_succession_each_get_exactly_one_conversation(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Thirty folders made at once, while lists, rescans and agent passes run often, make thirty conversations.

    Before agent passes were serialised, overlapping passes each created a conversation for the same new folder
    (55 to 81 conversations for these 30 folders)."""
    root = tmp_path / "root"
    init_root(root)
    config = Config(
        url=emu.base_url,
        api_key=KEY,
        root=root,
        state_dir=tmp_path / "state",
        poll_active_seconds=0.3,
        poll_idle_seconds=1.0,
        poll_conversations_seconds=0.2,
        rescan_seconds=0.3,
        debounce_ms=20,
        rate_limit_requests=1000,
    )
    engine = Engine(config)
    engine.start()
    try:
        assert engine.wait_ready(15)
        agent_dir = root / "Demo Agent"
        aid = emu.agent_id("Demo Agent")
        folders = [agent_dir / f"Folder {i}" for i in range(30)]
        for folder in folders:
            folder.mkdir()
        wait_until(lambda: all((f / ".conversation").is_file() for f in folders), 30, what="every folder bound")
        wait_until(lambda: len(emu.conversations(aid)) >= 30, 10, what="thirty conversations")
        ids = {(f / ".conversation").read_text().strip() for f in folders}
        on_server = {c["id"] for c in emu.conversations(aid)}
        assert len(ids) == 30
        assert on_server == ids  # no second conversation for any folder
    finally:
        engine.stop()


def _open_blobs(emu: EmulatorServer) -> list[str]:
    blobs = str(emu.state_dir / "blobs")
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(blobs):
            out.append(target)
    return out


def test_a_client_gone_during_a_throttled_download_leaves_no_open_file_in_the_emulator() -> None:
    """A download abandoned before its first body bytes (a killed convsync) closes the emulator's blob handle."""
    rule = FaultRule(route="download_file", bytes_per_second=1_000_000)
    with EmulatorServer(EmulatorOptions(api_key=KEY, faults=(rule,))) as emu:
        aid = emu.agent_id("Demo Agent")
        cid = emu.create_conversation(aid, "downloads")
        with AgentClient(emu.base_url, KEY) as client:
            list(client.stream_message(aid, cid, "/bigfile big.bin 1"))
        url = f"{emu.base_url}/agents/{aid}/conversations/{cid}/files/download/"
        for _ in range(3):
            with (
                httpx.Client() as http,
                http.stream("GET", url, params={"file_ref": "big.bin"}, headers={"Authorization": f"Bearer {KEY}"}),
            ):
                pass  # headers only: the client goes away before reading the body
        wait_until(lambda: not _open_blobs(emu), 20, what="the emulator to close every blob it streamed")


def test_temp_files_a_crash_left_in_a_conversation_folder_are_removed(emu: EmulatorServer, tmp_path: Path) -> None:
    """A SIGKILL while status, transcript.md or the .conversation marker was being replaced leaves a temp file
    in the conversation folder itself; the next run removes it (the long crash campaign found one left)."""
    rig = Rig.make(emu, tmp_path)
    try:
        rig.start()
        folder, _cid = rig.conversation("Crashed here")
        rig.stop()
        left = [folder / ".convsync-tmp-8423988d-.conversation", folder / ".convsync-tmp-0badf00d-status"]
        for path in left:
            path.write_text("half written")
        rig.start()
        wait_until(lambda: not any(p.exists() for p in left), 15, what="the crash leftovers to be removed")
        assert (folder / ".conversation").is_file()
    finally:
        rig.stop()
