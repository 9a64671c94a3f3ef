"""The mirror under test: the emulator over loopback HTTP, a real root folder, the real engine and watcher."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convsync.api.models import Message
from convsync.config import Config
from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.mirror.engine import Engine
from convsync.mirror.folders import init_root
from convsync.mirror.transcript import render_message, renderable
from tests.waiting import wait_until

AGENT = "Demo Agent"


@dataclass
class Mirror:
    emu: EmulatorServer
    root: Path
    config: Config
    aid: str
    engine: Engine | None = None

    @property
    def agent_dir(self) -> Path:
        return self.root / AGENT

    def start(self, **changes: Any) -> Engine:
        """Start an engine (with config ``changes``) and wait for its first scan."""
        if changes:
            self.config = dataclasses.replace(self.config, **changes)
        self.engine = Engine(self.config)
        self.engine.start()
        assert self.engine.wait_ready(15)
        return self.engine

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None

    def bound(self, folder: Path, timeout: float = 10) -> str:
        """The conversation id of ``folder``, once convsync bound it."""
        marker = folder / ".conversation"
        wait_until(marker.is_file, timeout, what=f"{marker} to appear")
        return marker.read_text().strip()

    def wait_folder_of(self, cid: str, timeout: float = 10) -> Path:
        def find() -> Path | None:
            for folder in self.agent_dir.iterdir():
                if folder.name.startswith("."):
                    continue  # convsync's folders under construction
                try:
                    if (folder / ".conversation").read_text().strip() == cid:
                        return folder
                except (FileNotFoundError, NotADirectoryError):
                    continue
            return None

        found = wait_until(find, timeout, what=f"a folder for conversation {cid}")
        assert found is not None
        return found

    def server_rendering(self, cid: str) -> str:
        messages = [Message.from_wire(m) for m in self.emu.messages(cid)]
        return "".join(render_message(m) for m in renderable(messages))

    def wait_idle(self, folder: Path, timeout: float = 15) -> None:
        """The conversation has nothing queued and its status says idle."""
        status = folder / "status"
        wait_until(
            lambda: status.is_file() and status.read_text().strip() == "idle",
            timeout,
            what=f"{status} to be idle",
        )


def chat(mirror: Mirror, name: str = "Chat") -> tuple[Path, str]:
    """A conversation made with ``mkdir`` under the agent's folder: (its folder, its id), once it is idle."""
    folder = mirror.agent_dir / name
    folder.mkdir()
    cid = mirror.bound(folder)
    mirror.wait_idle(folder)
    return folder, cid


def remove_folder(folder: Path, timeout: float = 10) -> None:
    """``rm -r`` as a user would, again if it raced with a file convsync was writing into the folder.

    A reconcile in flight may write ``status`` into the folder while it is being removed (ENOTEMPTY); the user's
    answer is to run ``rm -r`` once more, and that is what the deletion tests are about, not the race.
    """

    def gone() -> bool:
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return not folder.exists()

    wait_until(gone, timeout, what=f"{folder} to be removed")


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key="s4w_test-key", chunk_delay=0.0)) as emu:
        yield emu


@pytest.fixture
def mirror(emulator: EmulatorServer, tmp_path: Path) -> Iterator[Mirror]:
    """A started engine mirroring the emulator's "Demo Agent" into ``tmp_path/root``, with fast timers."""
    root = tmp_path / "root"
    init_root(root)
    config = Config(
        url=emulator.base_url,
        api_key=emulator.api_key,
        root=root,
        state_dir=tmp_path / "state",
        poll_active_seconds=0.3,
        poll_idle_seconds=2.0,
        poll_conversations_seconds=0.5,
        rescan_seconds=2.0,
        debounce_ms=100,
        rate_limit_requests=300,  # the client-side limiter is tested elsewhere; here it would only slow tests
    )
    m = Mirror(emulator, root, config, emulator.agent_id(AGENT))
    m.start()
    wait_until(m.agent_dir.is_dir, 10, what="the agent folder")
    try:
        yield m
    finally:
        m.stop()
