"""inbox/ → server → files/ and data-frames/, end to end through the running engine and its watcher."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import Mirror
from tests.waiting import wait_until

CSV = b"""order_id,amount,customer,paid,ordered_at
1001,19.99,Ada Lovelace,true,2025-11-03T09:15:00
1002,5,Grace Hopper,false,2025-11-03T10:00:30
1003,,"Hopper, Grace",true,
1004,120.5,,false,2025-12-31T23:59:59
"""


def new_conversation(mirror: Mirror, name: str) -> tuple[Path, str]:
    folder = mirror.agent_dir / name
    folder.mkdir()
    cid = mirror.bound(folder)
    wait_until((folder / "inbox").is_dir, 10, what="inbox/ to exist")
    return folder, cid


def upload_requests(mirror: Mirror, cid: str) -> int:
    return sum(1 for r in mirror.emu.requests if r.method == "POST" and r.path.endswith(f"{cid}/files"))


def test_a_file_written_slowly_over_five_seconds_is_uploaded_once_complete(mirror: Mirror) -> None:
    """A file written through one handle for five seconds goes up once, whole, after its writer closed it."""
    folder, cid = new_conversation(mirror, "Slow drop")
    chunks = [f"chunk {i}\n".encode() * 4000 for i in range(11)]

    def writer() -> None:
        with (folder / "inbox" / "growing.log").open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
                time.sleep(0.5)  # the writer's pace, not synchronisation

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until((folder / "files" / "growing.log").is_file, 30, what="the file to move to files/")
    finally:
        thread.join()
    whole = b"".join(chunks)
    assert (folder / "files" / "growing.log").read_bytes() == whole
    assert mirror.emu.file_hashes(cid) == {"growing.log": hashlib.sha256(whole).hexdigest()}
    assert upload_requests(mirror, cid) == 1


@pytest.mark.parametrize("parquet_output", [True, False], ids=["parquet-path", "json-path"])
def test_a_dropped_csv_made_a_frame_comes_back_as_the_same_table(mirror: Mirror, parquet_output: bool) -> None:
    """CSV into inbox/, then a prompt asking for a frame: data-frames/<name>.parquet equals the CSV, types too."""
    mirror.emu.configure(parquet_output=parquet_output)
    folder, _ = new_conversation(mirror, "Orders")
    (folder / "inbox" / "orders.csv").write_bytes(CSV)
    (folder / "prompt.txt").write_text("/frame orders.csv orders")
    target = folder / "data-frames" / "orders.parquet"
    wait_until(target.is_file, 30, what="orders.parquet to appear")

    # Parquet has no second unit: the CSV's timestamp[s] is stored as [ms], by pyarrow's own writer too.
    sink = pa.BufferOutputStream()
    pq.write_table(pacsv.read_csv(io.BytesIO(CSV)), sink)
    expected = pq.read_table(pa.BufferReader(sink.getvalue()))
    assert pq.read_table(target).equals(expected)
