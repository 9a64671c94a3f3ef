"""The crash campaign (mbsync-style): SIGKILL ``convsync run`` at random points of real work, restart it, and
check at the end that nothing was lost, nothing was sent twice and no file is torn.

One campaign:

1. The emulator runs in this process (its store is read directly); ``convsync run`` is a subprocess with its own
   config and state dir, its key in ``$CONVSYNC_API_KEY``.
2. A workload thread acts like a user: it saves prompts into ``prompt.txt`` of a few conversations (plain text,
   ``/slow`` replies, ``/write`` and ``/bigfile`` agent outputs, ``/frame`` and ``/bigframe`` data frames), drops
   files into ``inbox/`` (moved in whole, as a browser or ``mv`` does), and creates conversations with ``mkdir``.
   It never overwrites a prompt that was not taken yet (that would be the user's own loss).
3. The killer starts the daemon, picks a target phase (sending, prompt stored on the server, streaming,
   uploading, upload stored, downloading, exporting, a state write, start-up, or a random moment), waits until
   the phase is seen (status files, the emulator's store, the state database's WAL) and SIGKILLs the daemon.
4. After the last kill a clean run converges (everything delivered, every folder idle) and stops with SIGTERM;
   a further ``convsync sync`` must send nothing (a second run changes nothing).
5. The checks count: prompts lost / duplicated / out of order (``emu.user_messages``), uploads lost or committed
   more than once (every commit of the emulator's store is counted per file), conversations created twice,
   torn files (``transcript.md`` against the server's messages with revisions read, ``tests.transcript_view``;
   each ``.parquet`` read by pyarrow with the server's row count; each ``files/`` copy against the server's
   sha256) and temp files left.

Slow transfers are made observable with throttling rules of the emulator (bytes per second, latency), which
widen the windows without failing a single request. Everything random comes from one seed, printed first.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from convsync.api.client import AgentClient
from convsync.api.models import Message
from convsync.emulator import EmulatorOptions, EmulatorServer, FaultRule
from convsync.mirror.atomic import TEMP_PREFIX
from convsync.mirror.transcript import render_message, renderable
from tests.transcript_view import shows

REPO = Path(__file__).resolve().parents[2]
KEY = "s4w_crash-campaign-key"
AGENT = "Demo Agent"
TAKING = ".prompt.taking"


@dataclass(frozen=True)
class Settings:
    seed: int
    kills: int
    conversations: int = 3  # made on the server before the first start
    new_folders: int = 2  # made by mkdir while the campaign runs
    outstanding: int = 3  # prompts per conversation written but not yet on the server, at most
    settle_seconds: float = 120.0  # the clean final run must converge within this
    phase_wait: tuple[float, float] = (2.0, 4.0)  # how long to look for a targeted phase before killing anyway
    log: Callable[[str], None] = print
    # The enumerated campaign: instead of ``kills`` random SIGKILLs, one life per step here, each ending with the
    # daemon killing itself right after that durable step (``convsync.killpoints``), at its first or second time.
    steps: tuple[str, ...] = ()
    step_wait: float = 30.0  # how long a life may take to reach its step before it is killed anyway


@dataclass
class Conv:
    """One conversation as the workload knows it: what the user asked for, in order."""

    index: int
    folder: Path
    cid: str | None = None
    prompts: list[str] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)  # inbox name → sha256
    csv_rows: dict[str, int] = field(default_factory=dict)  # uploaded CSV → data rows (for /frame)
    framed: set[str] = field(default_factory=set)
    serial: int = 0

    def tag(self) -> str:
        self.serial += 1
        return f"c{self.index}n{self.serial}"


@dataclass
class Result:
    seed: int
    kills: int = 0
    phases: collections.Counter[str] = field(default_factory=collections.Counter)
    prompts: int = 0
    uploads: int = 0
    downloads: int = 0
    frames: int = 0
    conversations: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    torn: int = 0
    temp_files: int = 0
    converged: bool = False
    clean_exit: int | None = None
    second_run_writes: int = 0
    not_reached: list[str] = field(default_factory=list)  # enumerated steps no life reached
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and self.lost == 0
            and self.duplicated == 0
            and self.out_of_order == 0
            and self.torn == 0
            and self.temp_files == 0
            and self.converged
            and self.clean_exit == 0
            and self.second_run_writes == 0
            and not self.not_reached
        )

    def figures(self) -> str:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(self.phases.items()))
        return "\n".join(
            [
                f"seed: {self.seed}",
                f"kills: {self.kills} ({phases})",
                f"prompts: {self.prompts}",
                f"uploads: {self.uploads}",
                f"downloads: {self.downloads}",
                f"parquet exports: {self.frames}",
                f"conversations: {self.conversations}",
                f"lost: {self.lost}",
                f"duplicated: {self.duplicated}",
                f"out of order: {self.out_of_order}",
                f"torn files: {self.torn}",
                f"temp files left: {self.temp_files}",
                f"converged: {self.converged}; clean stop exit {self.clean_exit}; "
                f"writes by a second run: {self.second_run_writes}",
                f"seconds: {self.seconds:.1f}",
            ]
            + ([f"steps not reached: {', '.join(self.not_reached)}"] if self.not_reached else [])
            + [f"problem: {p}" for p in self.problems]
        )


# --- the emulator side ----------------------------------------------------------------------------------------


class CommitLog:
    """Counts every file the emulator's store commits, per (conversation, file_ref).

    The emulator keeps no public log of uploaded names (its request log has only paths), so the campaign wraps
    its store's ``commit_files``: an upload that reached the server twice is counted twice, even when the second
    one replaced the first with the same bytes.
    """

    def __init__(self, emu: EmulatorServer) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.total = 0
        self._lock = threading.Lock()
        store = emu._store
        original = store.commit_files

        def counting(conversation: Any, staged: Any) -> Any:
            rows = original(conversation, staged)
            with self._lock:
                for row in rows:
                    self.counts[(row.conversation_id, row.file_ref)] += 1
                    self.total += 1
            return rows

        store.commit_files = counting  # type: ignore[method-assign]


def emulator_options() -> EmulatorOptions:
    return EmulatorOptions(
        api_key=KEY,
        chunk_delay=0.01,  # every reply streams for a while: kills land mid-stream
        faults=(
            # Throttles, not failures: they keep transfers on the wire long enough to be killed midway.
            FaultRule(route="download_file", bytes_per_second=6 * 1024 * 1024),
            FaultRule(route="get_data_frame", bytes_per_second=1024 * 1024),
            FaultRule(route="upload_files", latency=0.25),
            # Some replies trickle: the prompt is stored long before agent_ready reaches convsync.
            FaultRule(route="stream_message", bytes_per_second=4000, probability=0.3),
        ),
    )


def server_messages(emu: EmulatorServer, cid: str) -> list[Message]:
    return [Message.from_wire(m) for m in emu.messages(cid)]


def server_rendering(emu: EmulatorServer, cid: str) -> str:
    messages = [Message.from_wire(m) for m in emu.messages(cid)]
    return "".join(render_message(m) for m in renderable(messages))


# --- the daemon -------------------------------------------------------------------------------------------------


class Daemon:
    """``convsync run`` as a subprocess; every incarnation appends to one log file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.config = config
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        assert self.proc is None
        with self.log.open("ab") as out:
            out.write(f"--- start at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "convsync", "run", "--config", str(self.config)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=REPO,
            )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        """SIGKILL; returns the exit status if it had died by itself before (a crash of its own)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        died = proc.poll()
        if died is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        return died

    def terminate(self, timeout: float = 40.0) -> int:
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dump the threads into the log
            proc.wait(timeout=10)
            return -1


def write_config(path: Path, emu: EmulatorServer, root: Path, state: Path) -> None:
    path.write_text(
        f"server:\n  url: {emu.base_url}\n  api_key_env: CONVSYNC_API_KEY\n"
        "  rate_limit: {requests: 300, per_seconds: 10}\n"
        f"root: {root}\nstate_dir: {state}\n"
        "poll: {active_seconds: 0.3, idle_seconds: 1, conversations_seconds: 1, rescan_seconds: 2}\n"
        "debounce_ms: 50\n"
    )


# --- the workload -----------------------------------------------------------------------------------------------


class Workload:
    """A user working in the mirror while the daemon keeps crashing (runs in its own, joined thread)."""

    def __init__(
        self,
        rng: random.Random,
        emu: EmulatorServer,
        agent_dir: Path,
        drops: Path,
        convs: list[Conv],
        new_folders: int,
        outstanding: int,
    ) -> None:
        self.rng = rng
        self.emu = emu
        self.agent_dir = agent_dir
        self.drops = drops
        self.convs = convs
        self.new_folders = new_folders
        self.outstanding = outstanding
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="crash-campaign-workload")
        self._nudges: collections.deque[str] = collections.deque()  # work the killer asks for, done first
        self._nudge_lock = threading.Lock()

    def nudge(self, kind: str) -> None:
        """Ask for one piece of work of ``kind`` (prompt, drop, write, frame, mkdir) soon."""
        with self._nudge_lock:
            self._nudges.append(kind)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._step()
                self.stopping.wait(self.rng.uniform(0.05, 0.35))
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _step(self) -> None:
        with self._nudge_lock:
            kind = self._nudges[0] if self._nudges else None
        if kind is not None:
            if self._nudged(kind):
                with self._nudge_lock:
                    self._nudges.popleft()
            return
        rng = self.rng
        made = sum(1 for c in self.convs if c.index >= 100)
        if made < self.new_folders and rng.random() < 0.04:
            index = 100 + made
            folder = self.agent_dir / f"Made by mkdir {index}"
            folder.mkdir()
            self.convs.append(Conv(index, folder))
            return
        conv = rng.choice(self.convs)
        if rng.random() < 0.2:
            self._drop(conv)
        else:
            self._prompt(conv)

    def _ready(self, conv: Conv) -> bool:
        """The conversation is bound, its prompt.txt was taken, and few prompts are still on their way."""
        if conv.cid is None:
            marker = conv.folder / ".conversation"
            with contextlib.suppress(OSError):
                conv.cid = marker.read_text().strip() or None
            if conv.cid is None:
                return False
        prompt = conv.folder / "prompt.txt"
        try:
            if prompt.stat().st_size != 0 or (conv.folder / TAKING).exists():
                return False
        except FileNotFoundError:
            return False
        on_server = len(self.emu.user_messages(conv.cid))
        return len(conv.prompts) - on_server < self.outstanding

    def _nudged(self, kind: str) -> bool:
        """Do one piece of nudged work; False when no conversation is ready for it yet (tried again later)."""
        if kind == "mkdir":
            index = 100 + sum(1 for c in self.convs if c.index >= 100)
            folder = self.agent_dir / f"Made by mkdir {index}"
            folder.mkdir()
            self.convs.append(Conv(index, folder))
            return True
        ready = [c for c in self.convs if self._ready(c)]
        if not ready:
            return False
        conv = self.rng.choice(ready)
        if kind == "drop":
            inbox = conv.folder / "inbox"
            if not inbox.is_dir() or any(inbox.iterdir()):
                return False
            self._drop(conv)
            return True
        self._prompt(conv, {"prompt": 0.9, "write": 0.45, "frame": 0.2}[kind])
        return True

    def _prompt(self, conv: Conv, roll: float | None = None) -> None:
        if not self._ready(conv):
            return
        rng = self.rng
        tag = conv.tag()
        unframed = sorted(set(conv.csv_rows) - conv.framed)
        roll = rng.random() if roll is None else roll
        if unframed and roll < 0.15:
            name = unframed[0]
            conv.framed.add(name)
            text = f"/frame {name} frame_{tag}"
        elif roll < 0.25:
            text = f"/bigframe big_{tag} {rng.choice([5000, 20000, 60000])}"
        elif roll < 0.35:
            text = f"/bigfile out_{tag}.bin {rng.choice([1, 2, 3])}"
        elif roll < 0.5:
            text = f"/write out_{tag}.txt agent output {tag}\nsecond line ✓"
        elif roll < 0.7:
            text = f"/slow {rng.randint(8, 30)} {rng.randint(20, 60)} {tag}"
        else:
            text = f"prompt {tag}: summarise — «straße» ✓\nline two of {tag}"
        conv.prompts.append(text)
        (conv.folder / "prompt.txt").write_text(text + "\n", encoding="utf-8")

    def _drop(self, conv: Conv) -> None:
        inbox = conv.folder / "inbox"
        if conv.cid is None or not inbox.is_dir() or len(list(inbox.iterdir())) >= 2:
            return
        rng = self.rng
        tag = conv.tag()
        if rng.random() < 0.6:
            rows = rng.randint(3, 400)
            name = f"data_{tag}.csv"
            lines = ["id,amount,label"] + [f"{i},{rng.randint(0, 10**6) / 100},{tag}-{i}" for i in range(rows)]
            data = ("\n".join(lines) + "\n").encode()
            conv.csv_rows[name] = rows
        else:
            name = f"blob_{tag}.bin"
            data = rng.randbytes(rng.choice([64 * 1024, 1024 * 1024, 3 * 1024 * 1024]))
        staged = self.drops / name
        staged.write_bytes(data)
        conv.uploads[name] = hashlib.sha256(data).hexdigest()
        staged.rename(conv.folder / "inbox" / name)  # dropped whole, like mv or a finished download


# --- observing phases -------------------------------------------------------------------------------------------


class Observer:
    """What the killer looks at to land a SIGKILL inside a phase."""

    def __init__(self, emu: EmulatorServer, commits: CommitLog, convs: list[Conv], state_dir: Path) -> None:
        self.emu = emu
        self.commits = commits
        self.convs = convs
        self.wal = state_dir / "state.db-wal"

    def statuses(self) -> list[str]:
        out = []
        for conv in list(self.convs):
            with contextlib.suppress(OSError):
                out.append((conv.folder / "status").read_text(encoding="utf-8").strip())
        return out

    def user_messages(self) -> int:
        return sum(len(self.emu.user_messages(c.cid)) for c in list(self.convs) if c.cid)

    def conversations(self) -> int:
        return len(self.emu.conversations(self.emu.agent_id(AGENT)))

    def wal_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.wal.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def plausible(self) -> list[str]:
        """The targeted phases that can happen now, given what is still to do."""
        out: set[str] = set()
        for conv in list(self.convs):
            if conv.cid is None:
                out.add("created")
                continue
            if len(conv.prompts) > len(self.emu.user_messages(conv.cid)):
                out.update(("sending", "prompt-stored", "streaming"))
            with contextlib.suppress(OSError):
                if any((conv.folder / "inbox").iterdir()):
                    out.update(("uploading", "upload-stored"))
            if any(not (conv.folder / "files" / ref).exists() for ref in self.emu.file_hashes(conv.cid)):
                out.add("downloading")
            frames = conv.folder / "data-frames"
            if any(not (frames / f"{n}.parquet").exists() for n in self.emu.data_frame_names(conv.cid)):
                out.add("exporting")
        return sorted(out)

    def probe(self, phase: str) -> Callable[[], bool]:
        """A condition that turns true once ``phase`` is under way."""

        def status_starts(prefix: str) -> Callable[[], bool]:
            return lambda: any(s.startswith(prefix) for s in self.statuses())

        if phase in ("sending", "streaming", "uploading", "downloading"):
            return status_starts(phase)
        if phase == "exporting":
            return status_starts("exporting")
        if phase == "prompt-stored":
            base = self.user_messages()
            return lambda: self.user_messages() > base
        if phase == "upload-stored":
            base = self.commits.total
            return lambda: self.commits.total > base
        if phase == "created":
            base = self.conversations()
            return lambda: self.conversations() > base
        if phase == "state-write":
            base = self.wal_stamp()
            return lambda: self.wal_stamp() != base
        raise ValueError(phase)


# --- the campaign -----------------------------------------------------------------------------------------------


def run_campaign(settings: Settings, workdir: Path) -> Result:
    """Run one campaign in ``workdir`` (created); returns the figures (``result.ok`` says whether it passed)."""
    started = time.monotonic()
    log = settings.log
    rng = random.Random(settings.seed)
    result = Result(settings.seed)
    log(f"crash campaign: seed {settings.seed}, {settings.kills} kills")
    root, state, drops = workdir / "root", workdir / "state", workdir / "drops"
    for d in (root, drops):
        d.mkdir(parents=True)
    (root / ".convsync-root").write_text("convsync root\n")
    config = workdir / "config.yaml"
    daemon_log = workdir / "daemon.log"

    with EmulatorServer(emulator_options()) as emu:
        commits = CommitLog(emu)
        aid = emu.agent_id(AGENT)
        convs: list[Conv] = []
        for i in range(settings.conversations):
            cid = emu.create_conversation(aid, f"Campaign {i}")
            convs.append(Conv(i, root / AGENT / f"Campaign {i}", cid))
        write_config(config, emu, root, state)
        env = {**os.environ, "CONVSYNC_API_KEY": KEY, "PYTHONFAULTHANDLER": "1", "PYTHONPATH": str(REPO)}
        daemon = Daemon(config, daemon_log, env)
        observer = Observer(emu, commits, convs, state)

        # A first start brings the folders; the workload starts once they exist.
        daemon.start()
        _wait(lambda: all((c.folder / "prompt.txt").exists() for c in convs), 30, "the first folders")
        workload = Workload(rng, emu, root / AGENT, drops, convs, settings.new_folders, settings.outstanding)
        workload.start()
        try:
            if settings.steps:
                _enumerate(settings, rng, daemon, workload, result, daemon_log)
            for _ in range(0 if settings.steps else settings.kills):
                if not daemon.alive():
                    if daemon.proc is not None:
                        died = daemon.kill()
                        result.problems.append(f"the daemon died by itself (exit {died}); see {daemon_log}")
                    daemon.start()
                phase = _pick_phase(rng, observer)
                hit = _aim(rng, phase, observer, daemon, settings)
                died = daemon.kill()
                if died is not None:
                    result.problems.append(f"the daemon died by itself (exit {died}); see {daemon_log}")
                result.kills += 1
                result.phases[hit] += 1
                if result.kills % 10 == 0:
                    sent = sum(len(c.prompts) for c in convs)
                    log(f"  {result.kills} kills, {sent} prompts written, {commits.total} files committed")
                daemon.start()
        finally:
            workload.stop()

        # The clean final run: everything converges, then a graceful stop.
        daemon.env = env
        if not daemon.alive():
            if daemon.proc is not None:
                daemon.kill()
            daemon.start()
        try:
            _wait(lambda: _converged(emu, convs), settings.settle_seconds, "the mirror to converge")
            result.converged = True
        except TimeoutError as exc:
            result.problems.append(str(exc) + ": " + _why_not_converged(emu, convs))
        result.clean_exit = daemon.terminate()

        # A second run changes nothing: `convsync sync` sends nothing and rewrites no transcript.
        before = {c.folder: _read(c.folder / "transcript.md") for c in convs}
        emu.clear_requests()
        sync = subprocess.run(
            [sys.executable, "-m", "convsync", "sync", "--config", str(config)],
            env=env,
            capture_output=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        if sync.returncode != 0:
            result.problems.append(
                f"convsync sync after the campaign exited {sync.returncode}: {sync.stderr[-2000:]!r}"
            )
        writes = [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
        result.second_run_writes = len(writes)
        changed = [str(f) for f, text in before.items() if _read(f / "transcript.md") != text]
        if changed:
            result.problems.append(f"a second run rewrote transcripts: {changed}")

        _check(emu, commits, convs, root, aid, result)
    result.seconds = time.monotonic() - started
    return result


# What the workload must do for a life to reach a step: a prompt, a dropped file, an agent output file, a frame.
_NUDGE = {"upload": "drop", "transfer": "drop", "download": "write", "export": "frame", "create": "mkdir"}
_NUDGE_STEP = {"atomic.renamed": "mkdir", "conversation.bound": "mkdir"}


def _enumerate(
    settings: Settings, rng: random.Random, daemon: Daemon, workload: Workload, result: Result, daemon_log: Path
) -> None:
    """One life per step of ``settings.steps``: started with ``CONVSYNC_KILL_AT=<step>@<n>`` (``n`` 1 or 2, from
    the seed), given the work that reaches the step, and over when the daemon killed itself there (or, if the
    step is not reached within ``step_wait``, killed from outside like a random kill)."""
    from convsync.killpoints import KILL_AT_ENV

    base = dict(daemon.env)
    steps = list(settings.steps)
    rng.shuffle(steps)
    for step in steps:
        if daemon.alive():
            daemon.kill()
        nth = rng.choice((1, 1, 2))
        daemon.env = {**base, KILL_AT_ENV: f"{step}@{nth}"}
        daemon.start()
        kind = _NUDGE_STEP.get(step) or _NUDGE.get(step.split(".")[0], "prompt")
        for _ in range(nth):
            workload.nudge(kind)
        deadline = time.monotonic() + settings.step_wait
        while daemon.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        died = daemon.kill()
        result.kills += 1
        if died == -signal.SIGKILL:
            result.phases[step] += 1
        else:
            if died is not None:
                result.problems.append(f"the daemon died by itself (exit {died}) aiming at {step}; see {daemon_log}")
            result.phases[f"{step} (not reached)"] += 1
            result.not_reached.append(step)
        settings.log(f"  {result.kills}/{len(steps)} {step}@{nth}: {'killed there' if died == -9 else 'not reached'}")
    daemon.env = base


def _pick_phase(rng: random.Random, observer: Observer) -> str:
    """Mostly a phase that can happen now (so kills land inside real work), sometimes a blind one."""
    roll = rng.random()
    if roll < 0.2:
        return "random"
    if roll < 0.28:
        return "startup"
    if roll < 0.38:
        return "state-write"
    return rng.choice(observer.plausible() or ["random"])


def _aim(rng: random.Random, phase: str, observer: Observer, daemon: Daemon, settings: Settings) -> str:
    """Wait for ``phase`` (or a random moment) and return what the kill landed in."""
    if phase == "random":
        # A random moment is the point here, not a condition. Some lives are long: a file found at start-up
        # waits for the unhinted quiet period (3 s) before its upload, and the work queued behind it with it.
        time.sleep(rng.uniform(0.05, 7.0))
        return "random"
    if phase == "startup":
        time.sleep(rng.uniform(0.0, 0.6))
        return "startup"
    probe = observer.probe(phase)
    low, high = settings.phase_wait
    if phase in ("uploading", "upload-stored"):
        # A file found at start-up must stay unchanged for the unhinted quiet period (3 s) before it goes.
        low, high = low + 2.0, high + 3.0
    deadline = time.monotonic() + rng.uniform(low, high)
    while time.monotonic() < deadline and daemon.alive():
        if probe():
            if phase not in ("prompt-stored", "upload-stored", "created", "state-write"):
                time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the phase, not always at its start
            return phase
        time.sleep(0.003)
    return f"random ({phase} not seen)"


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _folder_done(conv: Conv) -> str | None:
    """Why the folder is not finished yet, or None."""
    f = conv.folder
    if conv.cid is None:
        return "not bound"
    if _read(f / "prompt.txt") != "":
        return "prompt.txt not taken"
    if (f / TAKING).exists():
        return ".prompt.taking left"
    inbox = f / "inbox"
    if inbox.is_dir() and any(inbox.iterdir()):
        return f"inbox holds {sorted(p.name for p in inbox.iterdir())}"
    status = (_read(f / "status") or "").strip()
    if status != "idle":
        return f"status {status!r}"
    return None


def _converged(emu: EmulatorServer, convs: list[Conv]) -> bool:
    return not _why_not_converged(emu, convs)


def _why_not_converged(emu: EmulatorServer, convs: list[Conv]) -> str:
    for conv in convs:
        if conv.cid is None:
            with contextlib.suppress(OSError):
                conv.cid = (conv.folder / ".conversation").read_text().strip() or None
        reason = _folder_done(conv)
        if reason:
            return f"{conv.folder.name}: {reason}"
        assert conv.cid is not None
        if len(emu.user_messages(conv.cid)) < len(conv.prompts):
            return f"{conv.folder.name}: prompts still on their way"
        if not shows(_read(conv.folder / "transcript.md"), server_messages(emu, conv.cid)):
            return f"{conv.folder.name}: transcript differs from the server's messages"
        for ref, sha in emu.file_hashes(conv.cid).items():
            if _sha256(conv.folder / "files" / ref) != sha:
                return f"{conv.folder.name}: files/{ref} not downloaded yet"
        for name in emu.data_frame_names(conv.cid):
            if not (conv.folder / "data-frames" / f"{name}.parquet").is_file():
                return f"{conv.folder.name}: data-frames/{name}.parquet not exported yet"
    if emu.active_runs:
        return "agent runs still going"
    return ""


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _check(emu: EmulatorServer, commits: CommitLog, convs: list[Conv], root: Path, aid: str, result: Result) -> None:
    result.conversations = len(convs)
    server_convs = emu.conversations(aid)
    if len(server_convs) > len(convs):
        result.duplicated += len(server_convs) - len(convs)
        result.problems.append(f"{len(server_convs)} conversations on the server for {len(convs)} folders")
    client = AgentClient(emu.base_url, KEY)
    try:
        for conv in convs:
            if conv.cid is None:
                result.lost += len(conv.prompts) + len(conv.uploads)
                result.problems.append(f"{conv.folder.name} was never bound")
                continue
            _check_prompts(emu, conv, result)
            _check_uploads(emu, commits, conv, result)
            _check_files(emu, conv, result)
            _check_frames(client, aid, conv, result)
            if not shows(_read(conv.folder / "transcript.md"), server_messages(emu, conv.cid)):
                result.torn += 1
                result.problems.append(f"{conv.folder.name}/transcript.md does not show the server's messages")
            for kept in conv.folder.glob("prompt.*.txt"):
                result.problems.append(f"{kept} was set aside (a prompt that was not delivered)")
    finally:
        client.close()
    leftovers = [
        p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name == TAKING or p.name.endswith(".part")
    ]
    result.temp_files = len(leftovers)
    if leftovers:
        result.problems.append(f"temp files left: {[str(p.relative_to(root)) for p in leftovers][:10]}")


def _check_prompts(emu: EmulatorServer, conv: Conv, result: Result) -> None:
    assert conv.cid is not None
    got = emu.user_messages(conv.cid)
    want = conv.prompts
    result.prompts += len(want)
    got_count, want_count = collections.Counter(got), collections.Counter(want)
    lost = want_count - got_count
    extra = got_count - want_count
    if lost:
        result.lost += sum(lost.values())
        result.problems.append(f"{conv.folder.name}: prompts lost: {list(lost)[:5]}")
    if extra:
        result.duplicated += sum(extra.values())
        result.problems.append(f"{conv.folder.name}: prompts sent twice or unknown: {list(extra)[:5]}")
    seen: list[str] = []
    for text in got:
        if text in want_count and text not in seen:
            seen.append(text)
    if seen != [t for t in want if t in seen]:
        result.out_of_order += 1
        result.problems.append(f"{conv.folder.name}: prompts arrived out of order")


def _check_uploads(emu: EmulatorServer, commits: CommitLog, conv: Conv, result: Result) -> None:
    assert conv.cid is not None
    on_server = emu.file_hashes(conv.cid)
    for name, sha in conv.uploads.items():
        result.uploads += 1
        n = commits.counts[(conv.cid, name)]
        if n == 0 or on_server.get(name) != sha:
            result.lost += 1
            result.problems.append(f"{conv.folder.name}: inbox/{name} was not uploaded ({n} commits)")
        elif n > 1:
            result.duplicated += n - 1
            result.problems.append(f"{conv.folder.name}: inbox/{name} was uploaded {n} times")
        if _sha256(conv.folder / "files" / name) != sha:
            result.lost += 1
            result.problems.append(f"{conv.folder.name}: files/{name} does not hold the dropped bytes")


def _check_files(emu: EmulatorServer, conv: Conv, result: Result) -> None:
    assert conv.cid is not None
    for ref, sha in emu.file_hashes(conv.cid).items():
        if ref in conv.uploads:
            continue
        result.downloads += 1
        if _sha256(conv.folder / "files" / ref) != sha:
            result.torn += 1
            result.problems.append(f"{conv.folder.name}: files/{ref} differs from the server's copy")


def _check_frames(client: AgentClient, aid: str, conv: Conv, result: Result) -> None:
    assert conv.cid is not None
    infos = {f.name: f for f in client.list_data_frames(aid, conv.cid)}
    folder = conv.folder / "data-frames"
    local = {p.name for p in folder.glob("*.parquet")} if folder.is_dir() else set()
    for name, info in infos.items():
        result.frames += 1
        path = folder / f"{name}.parquet"
        try:
            rows = pq.read_table(path).num_rows
        except Exception as exc:  # any failure to read is a torn or missing file
            result.torn += 1
            result.problems.append(f"{conv.folder.name}: {path.name} is not valid Parquet: {exc}")
            continue
        if rows != info.num_rows:
            result.torn += 1
            result.problems.append(f"{conv.folder.name}: {path.name} has {rows} rows, the server {info.num_rows}")
    strays = local - {f"{n}.parquet" for n in infos}
    if strays:
        result.problems.append(f"{conv.folder.name}: parquet files without a frame: {sorted(strays)}")


def main_figures(result: Result) -> str:
    return json.dumps(
        {
            "seed": result.seed,
            "kills": result.kills,
            "prompts": result.prompts,
            "uploads": result.uploads,
            "lost": result.lost,
            "duplicated": result.duplicated,
            "torn": result.torn,
        }
    )


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
