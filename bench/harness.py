"""Shared plumbing of the benches: the emulator, the daemon as a subprocess, /proc sampling, result rows.

Every bench starts the emulator in-process (so it can read the emulator's request and stream logs, whose times
are ``time.time()``), starts ``convsync run`` as a subprocess with its own config, state dir and
``NOTIFY_SOCKET``, measures a baseline in the same run, and prints rows of "figure / baseline / ratio".

Times are wall-clock (``time.time()``) throughout because the emulator logs wall-clock times and the daemon is
another process: both read the same system clock.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from convsync.emulator import EmulatorServer

REPO = Path(__file__).resolve().parent.parent

API_KEY = "s4w_bench_0123456789abcdef"  # a throwaway key for the loopback emulator only
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- waiting


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.005) -> T:
    """Poll ``condition`` until truthy and return it; ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One printed figure: the measured value, its same-run baseline (if any) and the target it must meet."""

    figure: str
    value: float
    unit: str = ""
    baseline: float | None = None
    target: str = ""  # human-readable, e.g. "<= 120 ms"
    ok: bool | None = None  # None: no target

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "n/a"
    text = f"{x:.3g}" if abs(x) < 10 else f"{x:,.1f}" if abs(x) < 10000 else f"{x:,.0f}"
    return f"{text} {unit}".rstrip()


def report(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """Print a titled table of rows and, for ``bench/run``, one machine-readable JSON line per row."""
    header = ("figure", "value", "baseline", "ratio", "target", "ok")
    lines = [
        (
            r.figure,
            _fmt(r.value, r.unit),
            _fmt(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target or "-",
            "-" if r.ok is None else ("yes" if r.ok else "MISS"),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(f"\n== {title} ==")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    load = os.getloadavg()
    for note in [*notes, f"machine load average (1/5 min) {load[0]:.2f}/{load[1]:.2f} on {os.cpu_count()} cores"]:
        print(f"   note: {note}")
    for r in rows:
        record = {
            "bench": title,
            "figure": r.figure,
            "value": r.value,
            "unit": r.unit,
            "baseline": r.baseline,
            "ratio": r.ratio,
            "target": r.target,
            "ok": r.ok,
        }
        print("BENCH-ROW " + json.dumps(record), flush=True)
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------- emulator


@contextlib.contextmanager
def emulator(**options: Any) -> Iterator[EmulatorServer]:
    """The emulator in this process on a free loopback port; ``options`` go to ``EmulatorOptions``."""
    # Imported here so that the baseline scripts, which import this module too, pay only for httpx.
    from convsync.emulator import EmulatorOptions, EmulatorServer

    options.setdefault("api_key", API_KEY)
    with EmulatorServer(EmulatorOptions(**options)) as server:
        yield server


def requests_since(emu: Any, since: float, *, methods: Sequence[str] = (), path_part: str = "") -> list[Any]:
    """The emulator's logged requests that started at or after ``since`` (optionally filtered)."""
    return [
        r
        for r in list(emu.requests)
        if r.started >= since and (not methods or r.method in methods) and (not path_part or path_part in r.path)
    ]


# ---------------------------------------------------------------------------------------------- mirror root


def make_root(root: Path) -> Path:
    """A mirror root at ``root`` with its ``.convsync-root`` marker."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".convsync-root").touch()
    return root


def conversation_folders(root: Path) -> dict[str, Path]:
    """Conversation id → its folder, from the ``.conversation`` markers under ``root``."""
    found: dict[str, Path] = {}
    for marker in root.glob("*/*/.conversation"):
        with contextlib.suppress(OSError):
            found[marker.read_text().strip()] = marker.parent
    return found


def folder_of(root: Path, cid: str, timeout: float = 60.0) -> Path:
    """The folder the daemon made for conversation ``cid`` (waits for it to appear)."""
    return wait_until(lambda: conversation_folders(root).get(cid), timeout, f"the folder of conversation {cid}")


def editor_save(path: Path, text: str) -> float:
    """Save ``text`` into ``path`` the way vim does by default (write a temp file, rename it over).

    Returns the time of the rename, the moment the new content became visible."""
    tmp = path.with_name(f".{path.name}.bench~")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
    os.rename(tmp, path)
    return time.time()


# ---------------------------------------------------------------------------------------------- the daemon


def write_config(
    path: Path,
    *,
    url: str,
    root: Path,
    state_dir: Path,
    debounce_ms: int = 100,
    rate_limit: tuple[int, float] = (30, 10.0),
    poll: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a daemon config; JSON is a subset of YAML, so the bench needs no YAML library."""
    config: dict[str, Any] = {
        "server": {
            "url": url,
            "api_key_env": "CONVSYNC_API_KEY",
            "rate_limit": {"requests": rate_limit[0], "per_seconds": rate_limit[1]},
        },
        "root": str(root),
        "poll": {
            "active_seconds": 2,
            "idle_seconds": 60,
            "conversations_seconds": 30,
            "rescan_seconds": 60,
            **(poll or {}),
        },
        "debounce_ms": debounce_ms,
        "state_dir": str(state_dir),
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


class NotifySocket:
    """A ``$NOTIFY_SOCKET`` that records every sd_notify datagram with its arrival time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="bench-notify", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if ready:
                data = self._sock.recv(65536)
                now = time.time()
                self.messages.extend((now, line) for line in data.decode(errors="replace").splitlines())

    def first(self, line: str, since: float = 0.0) -> float | None:
        """Arrival time of the first datagram line equal to ``line`` received at or after ``since``."""
        return next((t for t, m in list(self.messages) if m == line and t >= since), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class ProcSample:
    at: float
    rss: int  # bytes
    cpu: float  # seconds of user + system time so far


def proc_sample(pid: int) -> ProcSample:
    """RSS and CPU time of process ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return ProcSample(time.time(), rss, cpu)


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's RSS (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Samples a process's RSS and CPU every ``interval`` seconds in a thread, until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.samples: list[ProcSample] = []
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.samples.append(proc_sample(self.pid))
            if self._stop.wait(self._interval):
                return

    def stop(self) -> list[ProcSample]:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.samples.append(proc_sample(self.pid))
        return self.samples


@dataclass
class Daemon:
    """``convsync run --config FILE`` as a subprocess with its own HOME, NOTIFY_SOCKET and log file."""

    config: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    notify: NotifySocket | None = None

    def start(self) -> Daemon:
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.notify = NotifySocket(Path(tempfile.mkdtemp(prefix="cs-notify-")))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "CONVSYNC_API_KEY": API_KEY,
            "NOTIFY_SOCKET": str(self.notify.path),
            "PYTHONPATH": str(REPO),
            **self.env,
        }
        self.log = self.workdir / f"daemon-{int(time.time() * 1000)}.log"
        self.started = time.time()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "convsync", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait for READY=1 and return its arrival time; fail with the daemon's log if it exits first."""
        assert self.proc is not None and self.notify is not None
        notify, proc = self.notify, self.proc

        def ready() -> float | None:
            if proc.poll() is not None:
                raise RuntimeError(f"convsync run exited with {proc.returncode}:\n{self.log_tail()}")
            return notify.first("READY=1")

        try:
            return wait_until(ready, timeout, "the daemon's READY=1", interval=0.002)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); returns the exit status."""
        code = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self.notify is not None:
            self.notify.close()
            with contextlib.suppress(OSError):
                self.notify.path.parent.rmdir()
            self.notify = None
        return code

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- inotify


class _InotifyEvent(ctypes.Structure):
    _fields_ = [
        ("wd", ctypes.c_int),
        ("mask", ctypes.c_uint32),
        ("cookie", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80
IN_CREATE = 0x100


class FileTail:
    """Records every version of one file as it changes: a thread blocked in inotify on the file's folder reads
    the file after each event and keeps (time read, content) whenever the content changed.

    inotify (through libc, no extra dependency) wakes the reader within microseconds of the daemon's write
    without a busy loop that would compete with the daemon for the 2 cores.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.versions: list[tuple[float, bytes]] = []
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(self._fd, str(path.parent).encode(), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path.parent}")
        self._stop_r, self._stop_w = os.pipe()
        self._read()
        self._thread = threading.Thread(target=self._run, name="bench-tail", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        now = time.time()
        if not self.versions or self.versions[-1][1] != data:
            self.versions.append((now, data))

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._stop_r in events:
                return
            try:
                os.read(self._fd, 65536)  # the events only say "look again"; what matters is the content
            except BlockingIOError:
                continue
            self._read()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


# ---------------------------------------------------------------------------------------------- sizes


def size_args(argv: Sequence[str] | None, description: str, **sizes: tuple[int, int]) -> Any:
    """Argument parser shared by the benches: ``--full`` switches every size to the issue's; each size can
    also be set directly (``--NAME N``). ``sizes`` maps name → (ci size, full size)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--full", action="store_true", help="the issue's sizes instead of the CI sizes")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the bench's files here")
    for name, (ci, full) in sizes.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float if isinstance(ci, float) else int,
            default=None,
            help=f"(CI {ci}, --full {full})",
        )
    args = parser.parse_args(argv)
    for name, (ci, full) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, full if args.full else ci)
    return args


@contextlib.contextmanager
def workdir(chosen: Path | None, prefix: str) -> Iterator[Path]:
    """A working directory: the one given (kept), or a temporary one (removed afterwards)."""
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------------------------- wire helpers


def http(emu: Any, timeout: float = 60.0) -> Any:
    """An httpx client for the emulator (the benches' own baselines and set-up talk to it over the wire)."""
    return httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=timeout)


def create_conversation(emu: Any, aid: str, name: str) -> str:
    """Create a conversation over the wire; its id."""
    with http(emu) as client:
        response = client.post(f"/agents/{aid}/conversations", json={"name": name})
        response.raise_for_status()
        return str(response.json()["id"])


def finished(record: Any) -> bool:
    """Whether a logged emulator request has completed."""
    return bool(getattr(record, "finished", None))


# ---------------------------------------------------------------------------------------------- scale


def seed(emu: Any, aid: str, conversations: int, messages: int) -> list[str]:
    """Seed the emulator's store directly (``convsync.emulator.seed``); the new conversation ids."""
    from convsync.emulator.seed import seed_conversations

    return seed_conversations(emu, aid, conversations, messages)


def wait_mirrored(root: Path, cids: Sequence[str], timeout: float) -> float:
    """Wait until every conversation in ``cids`` has a folder with a non-empty ``transcript.md``; return when
    the last of them was written (the newest of their mtimes as first seen non-empty).

    This runs in the bench process, which also serves the emulator: a scan that re-read every marker each
    time would take the emulator's CPU (and so slow the daemon being measured). Folders are looked up once
    (markers never change), only the transcripts still empty are stat-ed, and the poll is slow; the mtimes
    keep the figure exact all the same.
    """
    missing = set(cids)
    folders: dict[str, Path] = {}
    known_dirs: set[str] = set()
    written = 0.0

    def scan_new_folders() -> None:
        for agent_dir in root.iterdir():
            if agent_dir.name.startswith(".") or not agent_dir.is_dir():
                continue
            for entry in os.scandir(agent_dir):
                if entry.name.startswith(".") or entry.path in known_dirs:
                    continue
                with contextlib.suppress(OSError):
                    cid = (Path(entry.path) / ".conversation").read_text().strip()
                    folders[cid] = Path(entry.path)
                    known_dirs.add(entry.path)

    def done() -> bool:
        nonlocal written
        if any(cid not in folders for cid in missing):
            scan_new_folders()
        for cid in list(missing):
            folder = folders.get(cid)
            with contextlib.suppress(OSError):
                st = (folder / "transcript.md").stat() if folder is not None else None
                if st is not None and st.st_size > 0:
                    written = max(written, st.st_mtime)
                    missing.discard(cid)
        return not missing

    # The figure comes from the mtimes, so a slow poll costs no precision, only a second at the end.
    wait_until(done, timeout, f"{len(cids)} conversations mirrored", interval=1.0)
    return written


def engine_concurrency() -> int:
    """How many conversations the daemon's engine handles at once (the baselines use the same)."""
    from convsync.mirror import engine

    return engine.WORKERS
