"""data_frames.formats: [parquet, csv] writes a CSV copy beside each frame's Parquet file."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq

from convsync.api.client import AgentClient
from convsync.emulator import EmulatorServer
from convsync.mirror.folders import init_root
from tests.cli.conftest import KEY_ENV, convsync, write_config
from tests.waiting import wait_until

CSV_TOO = "data_frames:\n  formats: [parquet, csv]\n"


def frame_conversation(emulator: EmulatorServer) -> None:
    aid = emulator.agent_id("Demo Agent")
    with AgentClient(emulator.base_url, emulator.api_key) as client:
        made = client.create_conversation(aid, "Numbers")
        client.post_message(aid, made.id, "/bigframe sales 50 3")
        wait_until(lambda: client.list_data_frames(aid, made.id), 15, what="the agent to make the frame")


def frames_dir(root: Path) -> Path:
    """The data-frames/ folder of the one conversation (the agent renames it after its first prompt)."""
    [found] = (root / "Demo Agent").glob("*/data-frames")
    return found


def test_csv_is_written_beside_the_parquet(emulator: EmulatorServer, tmp_path: Path) -> None:
    """With csv in data_frames.formats, data-frames/<name>.csv holds the frame's header and every row."""
    root = tmp_path / "root"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, tmp_path / "state", CSV_TOO)
    frame_conversation(emulator)
    done = convsync("sync", "--config", str(config), env={KEY_ENV: emulator.api_key})
    assert done.returncode == 0, done.stderr
    frames = frames_dir(root)
    table = pq.read_table(frames / "sales.parquet")
    with (frames / "sales.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == table.column_names
    assert len(rows) - 1 == table.num_rows == 50


def test_without_csv_only_parquet_is_written(emulator: EmulatorServer, tmp_path: Path) -> None:
    """By default (parquet only) no CSV appears; asking for csv later adds it to frames already exported."""
    root = tmp_path / "root"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, tmp_path / "state")
    frame_conversation(emulator)
    assert convsync("sync", "--config", str(config), env={KEY_ENV: emulator.api_key}).returncode == 0
    frames = frames_dir(root)
    assert (frames / "sales.parquet").is_file()
    assert not (frames / "sales.csv").exists()
    config.write_text(config.read_text() + CSV_TOO)
    assert convsync("sync", "--config", str(config), env={KEY_ENV: emulator.api_key}).returncode == 0
    assert (frames / "sales.csv").is_file()


def test_an_unknown_format_is_a_config_error(emulator: EmulatorServer, tmp_path: Path) -> None:
    """`formats: [parquet, xlsx]` exits 78 naming the key and the formats there are."""
    config = write_config(
        tmp_path / "config.yaml", emulator.base_url, tmp_path, tmp_path / "state", "data_frames:\n  formats: [xlsx]\n"
    )
    done = convsync("status", "--config", str(config))
    assert done.returncode == 78
    assert "data_frames.formats" in done.stderr
    assert "parquet, csv" in done.stderr
