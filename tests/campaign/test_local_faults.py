"""A root that cannot be written for a while (a read-only remount): once it can, the conversation resumes at once
and the episode is in errors.log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.campaign.rig import Rig, tmpfs
from tests.waiting import wait_until

KEY = "s4w_local-faults-key"
READ_ONLY_SECONDS = 6.0


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A disk of its own, so it can be remounted read-only."""
    with tmpfs(tmp_path / "disk", "64m") as mount:
        yield mount


def remount(mount: Path, mode: str) -> None:
    # EBUSY while a file on it is open for writing (a write in flight): try again a moment later.
    def done() -> bool:
        remounted = subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], capture_output=True, check=False)
        return remounted.returncode == 0

    wait_until(done, 10, interval=0.05, what=f"remount {mode}")


def test_a_read_only_root_that_clears_resumes_at_once_and_is_logged(
    emu: EmulatorServer, tmp_path: Path, disk: Path
) -> None:
    """6 s of a read-only root (transcript writes fail meanwhile): a prompt saved once it is writable again is
    sent within 3 s (the backoff does not hold it back), and errors.log records the episode."""
    rig = Rig.make(emu, tmp_path, root=disk / "root")
    try:
        rig.start()
        folder, cid = rig.conversation("Read-only")
        rig.save_prompt(folder, "before")
        rig.wait_mirrored(folder, cid)
        remount(disk, "ro")
        ro_since = time.monotonic()
        emu.inject_message(cid, "a message the transcript cannot take now", role="agent")

        def reported() -> bool:
            row = next(c for c in rig.status_report().conversations if c.id == cid)
            return bool(row.last_error and "Read-only file system" in row.last_error)

        wait_until(reported, 20, what="`convsync status` to show the read-only root")
        # Stays read-only for a while, as a remount or a flaky network mount would: the passes keep failing.
        wait_until(lambda: time.monotonic() - ro_since >= READ_ONLY_SECONDS, READ_ONLY_SECONDS + 1, interval=0.1)
        remount(disk, "rw")
        (folder / "prompt.txt").write_text("after\n")
        saved = time.monotonic()
        wait_until(lambda: emu.user_messages(cid) == ["before", "after"], 30, what="the prompt after the fault")
        assert time.monotonic() - saved < 3.0
        rig.wait_mirrored(folder, cid)
        log = (folder / "errors.log").read_text(encoding="utf-8")
        assert "could not write in" in log and "Read-only file system" in log and "it works again" in log
    finally:
        rig.stop()
