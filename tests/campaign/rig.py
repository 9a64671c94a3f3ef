"""The in-process rig of the fault and hostile-input campaigns: the emulator over loopback, a real root, the real
engine and watcher, and an ``AgentClient`` whose transport counts every attempt (so a busy loop shows even while
the server is down and the emulator sees nothing)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from convsync.api.client import AgentClient, RateLimit
from convsync.api.models import Message
from convsync.config import Config
from convsync.emulator import EmulatorServer
from convsync.mirror.engine import Engine
from convsync.mirror.folders import init_root
from convsync.mirror.transcript import render_message, renderable
from convsync.statusreport import collect
from tests.campaign.crash import CommitLog
from tests.transcript_view import shows
from tests.waiting import wait_until

AGENT = "Demo Agent"
LIMIT = RateLimit(40, 4.0)  # the client's limiter in these campaigns: at most 40 requests in any 4 s


class CountingTransport(httpx.HTTPTransport):
    """The real network, with the monotonic time of every attempt (connection refused ones included)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.attempts: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.attempts.append(time.monotonic())
        return super().handle_request(request)

    def between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.attempts if start <= t < end)


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most events that fall in any window of ``window`` seconds."""
    ordered = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@dataclass
class Rig:
    emu: EmulatorServer
    root: Path
    config: Config
    transport: CountingTransport = field(default_factory=CountingTransport)
    client_options: dict[str, Any] = field(default_factory=dict)
    engine: Engine | None = None
    client: AgentClient | None = None
    commits: CommitLog | None = None

    @classmethod
    def make(cls, emu: EmulatorServer, tmp: Path, *, root: Path | None = None, **config_changes: Any) -> Rig:
        """A rig with its root in ``tmp/root`` (or ``root``) and its state in ``tmp/state``."""
        root = root or tmp / "root"
        init_root(root)
        config = Config(
            url=emu.base_url,
            api_key=emu.api_key,
            root=root,
            state_dir=tmp / "state",
            poll_active_seconds=0.3,
            poll_idle_seconds=1.0,
            poll_conversations_seconds=0.5,
            rescan_seconds=2.0,
            debounce_ms=50,
            rate_limit_requests=LIMIT.requests,
            rate_limit_window_seconds=LIMIT.per_seconds,
        )
        rig = cls(emu, root, dataclasses.replace(config, **config_changes))
        rig.commits = CommitLog(emu)
        return rig

    @property
    def aid(self) -> str:
        return self.emu.agent_id(AGENT)

    @property
    def agent_dir(self) -> Path:
        return self.root / AGENT

    def start(self, **client_options: Any) -> Engine:
        """Start the engine with a counting client (``client_options`` go to ``AgentClient``)."""
        options = {"transport": self.transport, "timeout": 10.0, "rate_limit": LIMIT, "max_retries": 2}
        self.client = AgentClient(self.config.url, self.config.api_key, **{**options, **client_options})
        self.engine = Engine(self.config, client=self.client)
        self.engine.start()
        assert self.engine.wait_ready(20)
        return self.engine

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self.client is not None:
            self.client.close()
            self.client = None

    # --- conversations ---------------------------------------------------------------------------------------

    def conversation(self, name: str) -> tuple[Path, str]:
        """A conversation made on the server, once its folder is there and idle."""
        cid = self.emu.create_conversation(self.aid, name)
        folder = self.folder_of(cid)
        wait_until((folder / "prompt.txt").exists, 15, what=f"{folder}/prompt.txt")
        return folder, cid

    def folder_of(self, cid: str, timeout: float = 20) -> Path:
        def find() -> Path | None:
            for marker in self.agent_dir.glob("*/.conversation"):
                if marker.parent.name.startswith("."):
                    continue
                try:
                    if marker.read_text().strip() == cid:
                        return marker.parent
                except OSError:
                    continue
            return None

        found = wait_until(find, timeout, what=f"the folder of {cid}")
        assert found is not None
        return found

    def save_prompt(self, folder: Path, text: str, *, timeout: float = 30) -> None:
        """Save ``text`` into prompt.txt (like ``echo >``) once the previous prompt was taken; wait until taken."""
        prompt = folder / "prompt.txt"
        wait_until(lambda: _size(prompt) == 0, timeout, what=f"{prompt} to be empty")
        prompt.write_text(text + "\n", encoding="utf-8")
        wait_until(lambda: _size(prompt) == 0, timeout, what=f"{prompt} to be taken")

    def drop(self, folder: Path, name: str, data: bytes) -> str:
        """Move a finished file into inbox/ (as ``mv`` does); returns its sha256."""
        staged = folder.parent.parent.parent / f".staged-{uuid.uuid4().hex}"  # outside the root, same disk
        staged.write_bytes(data)
        os.rename(staged, folder / "inbox" / name)
        return hashlib.sha256(data).hexdigest()

    # --- what the server holds -------------------------------------------------------------------------------

    def rendering(self, cid: str) -> str:
        messages = [Message.from_wire(m) for m in self.emu.messages(cid)]
        return "".join(render_message(m) for m in renderable(messages))

    def messages(self, cid: str) -> list[Message]:
        return [Message.from_wire(m) for m in self.emu.messages(cid)]

    def wait_delivered(self, cid: str, prompts: Sequence[str], timeout: float = 60) -> None:
        wait_until(lambda: len(self.emu.user_messages(cid)) >= len(prompts), timeout, what="every prompt on the server")
        assert self.emu.user_messages(cid) == list(prompts)

    def wait_mirrored(self, folder: Path, cid: str, timeout: float = 60) -> None:
        """The transcript shows the server's messages (revisions read) and the folder is idle, nothing queued."""

        def done() -> bool:
            return (
                shows(_read(folder / "transcript.md"), self.messages(cid))
                and _read(folder / "status").strip() == "idle"
                and not self.emu.active_runs
            )

        wait_until(done, timeout, what=f"{folder.name} to be mirrored and idle")

    def uploads_once(self, cid: str, files: dict[str, str]) -> None:
        """Every dropped file is on the server with its bytes, was committed exactly once, and sits in files/."""
        assert self.commits is not None
        on_server = self.emu.file_hashes(cid)
        for name, sha in files.items():
            assert on_server.get(name) == sha, name
            assert self.commits.counts[(cid, name)] == 1, (name, self.commits.counts[(cid, name)])

    def status_report(self) -> Any:
        return collect(self.config)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mount`` (we are root here), to fill or remount read-only; unmounted afterwards."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
