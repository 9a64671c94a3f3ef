"""At info level the log says what happened: one line per prompt, reply, upload, download and data frame."""

from __future__ import annotations

import logging
import os
import time

import pytest

from tests.integration.conftest import Mirror
from tests.waiting import wait_until


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_info_lines_name_the_folder_and_the_figures(mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    """Sending, a finished reply, an upload, a download and a frame export each log one info line with the
    conversation's folder and the size, time or row count (no ids)."""
    caplog.set_level(logging.INFO, logger="convsync")
    folder = mirror.agent_dir / "Chat"
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    (folder / "inbox").mkdir(exist_ok=True)
    data = folder / "inbox" / "numbers.csv"
    data.write_text("a,b\n1,2\n")
    old = time.time() - 60
    os.utime(data, (old, old))
    wait_until((folder / "files" / "numbers.csv").exists, 15, what="the upload")
    (folder / "prompt.txt").write_text("/write out.txt hello from the agent")
    wait_until((folder / "files" / "out.txt").exists, 15, what="the download")
    (folder / "prompt.txt").write_text("/bigframe sales 50 3")
    wait_until((folder / "data-frames" / "sales.parquet").exists, 15, what="the frame")

    def logged(prefix: str) -> list[str]:
        return [line for line in lines(caplog) if line.startswith(f"Demo Agent/Chat: {prefix}")]

    wait_until(lambda: len(logged("reply finished (")) == 2, 10, what="both replies logged")
    assert len(logged("prompt sent (")) == 2
    assert logged("uploaded inbox/numbers.csv (8 B in ")
    assert logged("downloaded files/out.txt (20 B in ")
    assert logged("exported data frame sales to data-frames/sales.parquet (50 rows)")
    assert all(cid not in line for line in lines(caplog))
