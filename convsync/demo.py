"""``convsync demo``: the whole thing in half a minute, against the built-in emulator.

Starts the emulator in-process on a free loopback port, a mirror root with a demo config, and the sync engine;
then plays a short session the way a user would: ``mkdir`` a conversation, drop a CSV into ``inbox/``, save a
prompt into ``prompt.txt`` while ``transcript.md`` is printed as it grows, and ask the scripted agent to turn
the CSV into a data frame, which appears as ``data-frames/sales.parquet``. ``--keep`` leaves both running.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from convsync.config import Config
from convsync.mirror.engine import Engine
from convsync.mirror.folders import init_root

AGENT = "Demo Agent"
CONVERSATION = "Quarterly sales"
DEMO_KEY = "s4w_demo-key"
KEY_ENV = "CONVSYNC_DEMO_API_KEY"
SALES_CSV = (
    "date,region,units,revenue\n2025-01-31,North,120,2400.5\n2025-02-28,South,95,1900.0\n2025-03-31,East,143,2860.25\n"
)
STEP_TIMEOUT = 15.0


class DemoFailed(Exception):
    pass


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _wait(condition: Callable[[], object], what: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        time.sleep(0.05)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


class _TranscriptPrinter:
    """Prints what is appended to ``transcript.md`` (like ``tail -f``), from where it started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = len(_read(path))

    def show_new(self) -> None:
        text = _read(self.path)
        if len(text) < self.shown:  # rewritten: show from the start
            self.shown = 0
        if len(text) > self.shown:
            sys.stdout.write(text[self.shown :])
            sys.stdout.flush()
            self.shown = len(text)


def _prompt_and_follow(folder: Path, prompt: str, until: str) -> None:
    """Save ``prompt`` into prompt.txt and print the transcript live until it contains ``until``."""
    printer = _TranscriptPrinter(folder / "transcript.md")
    start = printer.shown
    print(f"$ echo {prompt!r} > '{folder.name}/prompt.txt'", flush=True)
    (folder / "prompt.txt").write_text(prompt + "\n", encoding="utf-8")
    deadline = time.monotonic() + STEP_TIMEOUT
    while until not in _read(folder / "transcript.md")[start:]:
        printer.show_new()
        if time.monotonic() > deadline:
            raise DemoFailed(f"the reply to {prompt!r} did not arrive")
        time.sleep(0.03)
    _wait(lambda: _read(folder / "status").strip() == "idle", "the conversation to be idle again")
    printer.show_new()


def _write_config(base: Path, url: str, root: Path, state: Path) -> Path:
    path = base / "config.yaml"
    path.write_text(
        "# Written by `convsync demo`. The emulator accepts the key s4w_demo-key; it is read from the\n"
        f"# environment variable {KEY_ENV}.\n"
        f"server:\n  url: {url}\n  api_key_env: {KEY_ENV}\n"
        f"root: {root}\nstate_dir: {state}\n"
        "poll:\n  active_seconds: 1\n  idle_seconds: 10\n  conversations_seconds: 2\n  rescan_seconds: 10\n",
        encoding="utf-8",
    )
    return path


def run_demo(keep: bool, directory: Path | None) -> int:
    """Play the scripted session; 0 on success. With ``keep`` it then waits for Ctrl-C."""
    from convsync.emulator import EmulatorOptions, EmulatorServer

    base = (
        directory.expanduser().resolve() if directory is not None else Path(tempfile.mkdtemp(prefix="convsync-demo-"))
    )
    base.mkdir(parents=True, exist_ok=True)
    root = base / "Conversations"
    state = base / "state"
    init_root(root)
    with EmulatorServer(EmulatorOptions(api_key=DEMO_KEY, chunk_delay=0.05)) as emu:
        emu.agent_id(AGENT)
        config_path = _write_config(base, emu.base_url, root, state)
        config = Config(
            url=emu.base_url,
            api_key=emu.api_key,
            root=root,
            state_dir=state,
            poll_active_seconds=1.0,
            poll_idle_seconds=10.0,
            poll_conversations_seconds=2.0,
            rescan_seconds=10.0,
            debounce_ms=100,
        )
        engine = Engine(config)
        try:
            _say(f"the emulator serves {emu.base_url}; the mirror root is {root}")
            engine.start()
            if not engine.wait_ready(STEP_TIMEOUT):
                raise DemoFailed("the first scan did not finish")
            _play(root)
            _say("where to look")
            folder = root / AGENT / CONVERSATION
            print(f"  the conversation:  {folder}")
            print(f"  follow it live:    tail -f '{folder / 'transcript.md'}'")
            print(f"  send a prompt:     echo 'Hello again' > '{folder / 'prompt.txt'}'")
            print(f"  the data frame:    {folder / 'data-frames' / 'sales.parquet'}")
            print(f"  status of all:     convsync status --config '{config_path}'")
            if keep:
                _say("the emulator and the sync keep running; press Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
        except DemoFailed as exc:
            print(f"convsync demo: {exc}", file=sys.stderr)
            return 1
        finally:
            engine.stop()
    if directory is None and not keep:
        print(f"\n(the demo folder {base} is kept; delete it when done: rm -r '{base}')")
    return 0


def _play(root: Path) -> None:
    agent_dir = root / AGENT
    folder = agent_dir / CONVERSATION
    _say(f"every agent is a folder: {agent_dir}")
    _wait(agent_dir.is_dir, "the agent folder")

    _say("a new folder is a new conversation")
    print(f"$ mkdir '{folder}'", flush=True)
    folder.mkdir(exist_ok=True)
    _wait((folder / ".conversation").is_file, "the conversation to be created on the server")
    print(f"created on the server; id {_read(folder / '.conversation').strip()}")

    _say("save a prompt: it is sent, and the reply streams into transcript.md")
    _prompt_and_follow(folder, "Hello! What can you do?", "You said: Hello! What can you do?")

    _say("drop a file into inbox/: it is uploaded, then moved to files/")
    print(f"$ cp sales.csv '{folder.name}/inbox/'", flush=True)
    staging = folder / "inbox" / ".sales.csv.part"
    staging.write_text(SALES_CSV, encoding="utf-8")
    staging.rename(folder / "inbox" / "sales.csv")
    _prompt_and_follow(folder, "/frame sales.csv sales", "Created data frame")
    _wait((folder / "files" / "sales.csv").is_file, "sales.csv in files/")
    parquet = folder / "data-frames" / "sales.parquet"
    _wait(parquet.is_file, "data-frames/sales.parquet")
    print(f"\n{parquet.relative_to(root)}: {parquet.stat().st_size} bytes of Parquet")
