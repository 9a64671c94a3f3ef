"""Bench 1, prompt latency: an editor-style save of ``prompt.txt`` → the emulator receiving the request.

Each save writes a temp file and renames it over ``prompt.txt`` (vim's default); the latency is the emulator's
logged start of ``POST …/stream`` minus the time of the rename. The next save waits until the reply has ended
and the daemon is idle again, plus a random pause so saves do not phase-lock with the daemon's timers.

Baseline, same run: a bare script (watchdog observer on the folder, the same debounce, one httpx POST of the
stream) doing the same job; run with ``--baseline-watcher`` as a subprocess of this bench.

Targets: p50 ≤ debounce + 20 ms, p99 ≤ debounce + 60 ms.

Busy mode, same run: ``--busy`` more conversations (50) polled at their fastest (``poll.idle_seconds`` =
``poll.active_seconds`` = 2 s, so polls fill their whole share of the default rate limit) while the prompts are
saved; target p99 ≤ debounce + 100 ms.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import harness as h
import httpx
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

DEFAULT_RATE = (30, 10.0)  # config.example.yaml's default
UNLIMITED = (100_000, 1.0)
STALL_MS = 500


def _measure(emu: Any, cid: str, folder: Path, saves: int, idle: Any, pause: float) -> list[float]:
    """Latencies (seconds) of ``saves`` saves of ``folder/prompt.txt``."""
    prompt = folder / "prompt.txt"
    latencies: list[float] = []
    rng = random.Random(7)
    for i in range(saves):
        before = len(h.requests_since(emu, 0, methods=("POST",), path_part=f"{cid}/stream"))
        text = f"bench prompt {i} {uuid.uuid4().hex[:8]}\n"
        saved = h.editor_save(prompt, text)
        record = h.wait_until(
            lambda b=before: (r := h.requests_since(emu, 0, methods=("POST",), path_part=f"{cid}/stream"))[b:] and r[b],
            30,
            f"the stream request of save {i}",
        )
        latencies.append(record.started - saved)
        h.wait_until(lambda r=record: h.finished(r), 60, f"the reply of save {i}")
        idle()
        time.sleep(rng.uniform(0.75 * pause, 1.25 * pause))  # pacing between saves, not synchronisation
    return latencies


def _daemon_run(
    emu: Any,
    aid: str,
    work: Path,
    saves: int,
    debounce_ms: int,
    rate: tuple[int, float],
    pause: float,
    busy: int = 0,
    polls: list[float] | None = None,
) -> list[float]:
    """Latencies of a daemon run; with ``busy``, that many more conversations are polled at their fastest
    meanwhile, and ``polls`` gets the run's poll rate (message reads per second of other conversations)."""
    name = f"{rate[0]}-busy" if busy else f"{rate[0]}"
    others = set(h.seed(emu, aid, busy, 4)) if busy else set()
    cid = h.create_conversation(emu, aid, f"prompt latency {name}")
    root = h.make_root(work / f"daemon-{name}")
    config = h.write_config(
        work / f"daemon-{name}.yaml",
        url=emu.base_url,
        root=root,
        state_dir=work / f"state-{name}",
        debounce_ms=debounce_ms,
        rate_limit=rate,
        poll={"active_seconds": 2, "idle_seconds": 2} if busy else None,
    )
    with h.Daemon(config, work) as daemon:
        daemon.wait_ready()
        folder = h.folder_of(root, cid)

        def idle() -> None:
            # prompt.txt is emptied once the prompt is taken; status says idle once the reply is in.
            h.wait_until(lambda: (folder / "prompt.txt").read_text().strip() == "", 30, "prompt.txt to be taken")
            status = folder / "status"
            h.wait_until(
                lambda: not status.exists() or status.read_text().startswith("idle"),
                30,
                "the status to return to idle",
            )

        # One warm-up save, not counted: the first request pays for imports and connection set-up.
        _measure(emu, cid, folder, 1, idle, pause)
        if busy:  # measure once the others are polled, not only read for their first look

            def polled() -> bool:
                reads = h.requests_since(emu, daemon.started, methods=("GET",), path_part="/messages")
                return sum(1 for r in reads if any(o in r.path for o in others)) >= 2 * busy

            h.wait_until(polled, 180, "the other conversations' polls")
        begun = time.time()
        latencies = _measure(emu, cid, folder, saves, idle, pause)
        if polls is not None:
            reads = h.requests_since(emu, begun, methods=("GET",), path_part="/messages")
            polls.append(sum(1 for r in reads if any(o in r.path for o in others)) / (time.time() - begun))
        return latencies


def _baseline_run(emu: Any, aid: str, work: Path, saves: int, debounce_ms: int, pause: float) -> list[float]:
    cid = h.create_conversation(emu, aid, "prompt latency baseline")
    folder = work / "baseline"
    folder.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--baseline-watcher",
            str(folder),
            emu.base_url,
            aid,
            cid,
            str(debounce_ms),
        ],
        stdout=subprocess.PIPE,
        env={"CONVSYNC_API_KEY": emu.api_key, "PATH": "/usr/bin:/bin"},
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "watching":
            raise RuntimeError("the baseline watcher did not start")
        _measure(emu, cid, folder, 1, lambda: None, pause)
        return _measure(emu, cid, folder, saves, lambda: None, pause)
    finally:
        proc.terminate()
        proc.wait(10)


def baseline_watcher(folder: str, url: str, aid: str, cid: str, debounce_ms: str) -> None:
    """The baseline: watchdog + a per-folder debounce timer + one httpx POST of the stream per new prompt."""
    client = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {os.environ['CONVSYNC_API_KEY']}"}, timeout=60
    )
    prompt = Path(folder) / "prompt.txt"
    lock = threading.Lock()
    timer: list[threading.Timer | None] = [None]
    last: list[str] = [""]

    def send() -> None:
        try:
            text = prompt.read_text()
        except FileNotFoundError:
            return
        if not text.strip() or text == last[0]:
            return
        last[0] = text
        with client.stream("POST", f"/agents/{aid}/conversations/{cid}/stream", json={"content": text}) as r:
            for _ in r.iter_lines():
                pass

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            paths = (event.src_path, getattr(event, "dest_path", ""))
            if not any(str(p).endswith("prompt.txt") for p in paths):
                return
            with lock:
                if timer[0] is not None:
                    timer[0].cancel()
                timer[0] = threading.Timer(int(debounce_ms) / 1000, send)
                timer[0].start()

    observer = Observer()
    observer.schedule(Handler(), folder)
    observer.start()
    print("watching", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        observer.stop()
        observer.join()


def main(argv: list[str] | None = None) -> int:
    args = h.size_args(argv, __doc__ or "", saves=(20, 200), debounce_ms=(100, 100), pause_s=(1.0, 1.0), busy=(50, 50))
    ms = 1000.0
    with h.workdir(args.workdir, "cs-bench-prompt-") as work, h.emulator(chunk_delay=0.0) as emu:
        aid = emu.agent_id("Demo Agent")
        base = _baseline_run(emu, aid, work, args.saves, args.debounce_ms, args.pause_s)
        mine = _daemon_run(emu, aid, work, args.saves, args.debounce_ms, DEFAULT_RATE, args.pause_s)
        free = _daemon_run(emu, aid, work, args.saves, args.debounce_ms, UNLIMITED, args.pause_s)
        polls: list[float] = []
        busy = _daemon_run(emu, aid, work, args.saves, args.debounce_ms, DEFAULT_RATE, args.pause_s, args.busy, polls)
    d = args.debounce_ms
    p50, p99 = h.percentile(mine, 50) * ms, h.percentile(mine, 99) * ms
    f50, f99 = h.percentile(free, 50) * ms, h.percentile(free, 99) * ms
    b50, b99 = h.percentile(base, 50) * ms, h.percentile(base, 99) * ms
    stalled = sum(1 for x in mine if x * ms > d + STALL_MS)
    u50, u99 = h.percentile(busy, 50) * ms, h.percentile(busy, 99) * ms
    share = 0.5 * DEFAULT_RATE[0] / DEFAULT_RATE[1]
    h.report(
        f"prompt latency (save → stream request; {args.saves} saves, one every ~{args.pause_s:g} s + reply)",
        [
            h.Row("debounce", d, "ms"),
            h.Row("prompt latency p50", p50, "ms", b50, f"<= {d + 20} ms", p50 <= d + 20),
            h.Row("prompt latency p99", p99, "ms", b99, f"<= {d + 60} ms", p99 <= d + 60),
            h.Row("prompt latency max", max(mine) * ms, "ms", max(base) * ms),
            h.Row(f"saves delayed > debounce + {STALL_MS} ms", stalled, "", None, "0", stalled == 0),
            h.Row("no rate limit: prompt latency p50", f50, "ms", b50, f"<= {d + 20} ms", f50 <= d + 20),
            h.Row("no rate limit: prompt latency p99", f99, "ms", b99, f"<= {d + 60} ms", f99 <= d + 60),
            h.Row("busy: prompt latency p50", u50, "ms", b50),
            h.Row("busy: prompt latency p99", u99, "ms", b99, f"<= {d + 100} ms", u99 <= d + 100),
            h.Row(
                "busy: polls of the others", polls[0], "req/s", share, f"<= {share:g} req/s", polls[0] <= 1.05 * share
            ),
        ],
        notes=[
            "baseline: watchdog observer + the same debounce + one httpx POST, as a separate process",
            f"daemon with the default rate limit {DEFAULT_RATE[0]}/{DEFAULT_RATE[1]:g} s, then with it lifted "
            f"({UNLIMITED[0]:,}/{UNLIMITED[1]:g} s) to separate the save → send path from the limiter",
            f"busy: the default rate limit, {args.busy} more conversations polled every 2 s (idle = active), "
            "so their polls fill the background share; baseline of the poll rate = that share",
        ],
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-watcher":
        baseline_watcher(*sys.argv[2:7])
        sys.exit(0)
    sys.exit(main())
