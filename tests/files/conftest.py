"""The emulator and a client for the files tests: one emulator per module, one conversation per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from convsync.api.client import AgentClient
from convsync.emulator import EmulatorOptions, EmulatorServer


@dataclass
class Conv:
    emu: EmulatorServer
    client: AgentClient
    aid: str
    cid: str
    folder: Path

    @property
    def inbox(self) -> Path:
        return self.folder / "inbox"

    @property
    def files(self) -> Path:
        return self.folder / "files"

    def say(self, text: str) -> str:
        """Post a prompt synchronously; the agent's reply text."""
        messages = self.client.post_message(self.aid, self.cid, text)
        return messages[-1].text

    def requests(self, method: str, route: str) -> int:
        """How many ``method`` requests this conversation's ``route`` (e.g. ``files``) has seen."""
        tail = f"/conversations/{self.cid}/{route}"
        return sum(1 for r in self.emu.requests if r.method == method and r.path.rstrip("/").endswith(tail))


def _start(parquet_output: bool, frame_row_cap: int = 100_000) -> Iterator[EmulatorServer]:
    options = EmulatorOptions(api_key="s4w_test-key", parquet_output=parquet_output, frame_row_cap=frame_row_cap)
    with EmulatorServer(options) as emu:
        yield emu


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    yield from _start(parquet_output=True)


@pytest.fixture(scope="module")
def emu_json_only() -> Iterator[EmulatorServer]:
    yield from _start(parquet_output=False)


@pytest.fixture(scope="module")
def emu_small_cap() -> Iterator[EmulatorServer]:
    """A server whose data-frame route answers at most 1000 rows at a time (the real cap is 100000)."""
    yield from _start(parquet_output=True, frame_row_cap=1000)


def _conv(emu: EmulatorServer, tmp_path: Path) -> Iterator[Conv]:
    with AgentClient(emu.base_url, emu.api_key, rate_limit=None) as client:
        aid = emu.agent_id("Demo Agent")
        cid = client.create_conversation(aid, f"files test {uuid.uuid4().hex[:8]}").id
        folder = tmp_path / "conv"
        (folder / "inbox").mkdir(parents=True)
        (folder / "files").mkdir()
        yield Conv(emu, client, aid, cid, folder)


@pytest.fixture
def conv(emu: EmulatorServer, tmp_path: Path) -> Iterator[Conv]:
    yield from _conv(emu, tmp_path)


@pytest.fixture
def conv_json_only(emu_json_only: EmulatorServer, tmp_path: Path) -> Iterator[Conv]:
    yield from _conv(emu_json_only, tmp_path)


@pytest.fixture
def conv_small_cap(emu_small_cap: EmulatorServer, tmp_path: Path) -> Iterator[Conv]:
    yield from _conv(emu_small_cap, tmp_path)
