"""Bench, remote changes: how soon a message added elsewhere to an idle conversation reaches its transcript.

The emulator enforces the self-hosted gateway's 50 requests / 10 s and its conversations list carries
``updated_at`` (``list_updated_at="on"``); N conversations x M messages are seeded, the daemon runs on its
default config. Once every ``transcript.md`` exists:

- **with change hints**: a message is added elsewhere to a few idle conversations at once; the time until each
  shows in its ``transcript.md`` must be ≤ ``poll.conversations_seconds`` + 5 s;
- **without**: the list's ``updated_at`` is switched off and (``--settle 1``, the default) the bench waits until
  every conversation's files and data frames were listed once (a first mirror's backlog in the background
  lane, before which polls wait). Then, over 2.2 promised intervals, the longest gap between two reads of each
  untouched conversation is the measured worst case (a change made at the worst moment waits that long;
  changes made to many conversations at once would make them active, polled fast, and stretch the others'
  interval), next to what the poll policy promises: one idle interval, (N + 2) / 1.5 s with the default
  config (``docs/performance.md``). One message (``--sampled``) added elsewhere at the window's start is
  timed too, as a single real sample.
- **idle request rate**: the daemon's requests per second from the first injection to the end (the reads the
  list announced left out: they are first looks), against the background share (half of the client's 30 / 10 s).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import harness as h

from convsync.mirror.plan import poll_intervals

GATEWAY = (50, 10.0)
DEFAULT_RATE = (30, 10.0)
SHARE = 0.5
LISTS_SECONDS = 30.0  # poll.conversations_seconds, the default
IDLE_SECONDS = 60.0
ACTIVE_SECONDS = 2.0
SLACK = 5.0
WINDOW_INTERVALS = 2.2  # the without-hints window, in promised idle intervals: each conversation read twice


def _appeared(folders: dict[str, Path], texts: dict[str, str], timeout: float) -> dict[str, float]:
    """When each conversation's text reached its transcript (the transcript's mtime when first seen)."""
    seen: dict[str, float] = {}

    def done() -> bool:
        for cid, text in texts.items():
            if cid in seen:
                continue
            path = folders[cid] / "transcript.md"
            try:
                mtime = path.stat().st_mtime
                if text in path.read_text(encoding="utf-8"):
                    seen[cid] = mtime
            except OSError:
                continue
        return len(seen) == len(texts)

    with contextlib.suppress(TimeoutError):  # reported: a message not seen counts as "inf"
        h.wait_until(done, timeout, f"{len(texts)} remote messages in their transcripts", interval=0.25)
    return seen


def _longest_gaps(emu: Any, cids: list[str], start: float, end: float) -> list[float]:
    """Per conversation, the longest time in [start, end] between two reads of its messages (the window's
    edges count as reads): how long a change made at the worst moment would have waited. Sorted."""
    reads: dict[str, list[float]] = {cid: [start] for cid in cids}
    for r in h.requests_since(emu, start, methods=("GET",)):
        cid = r.path.rsplit("/", 2)[-2] if r.path.endswith("/messages") else ""
        if cid in reads and r.started <= end:
            reads[cid].append(r.started)
    return sorted(max(b - a for a, b in zip(times, [*times[1:], end], strict=True)) for times in reads.values())


def _add_elsewhere(emu: Any, cids: list[str], tag: str) -> tuple[float, dict[str, str]]:
    texts = {cid: f"{tag} written elsewhere into {cid}" for cid in cids}
    at = time.time()
    for cid, text in texts.items():
        emu.inject_message(cid, text)
    return at, texts


def main(argv: list[str] | None = None) -> int:
    sizes = {"conversations": (100, 1000), "messages": (1, 1), "hinted": (3, 3), "sampled": (1, 1)}
    # --idle-window: with --sampled 0, the idle rate is measured over this many more seconds (the limiter's
    # window is 10 s: a shorter measure says little).
    args = h.size_args(argv, __doc__ or "", **sizes, settle=(1, 1), idle_window=(120, 120))
    n = args.conversations
    args.settle = args.settle != 0
    budget = SHARE * DEFAULT_RATE[0] / DEFAULT_RATE[1]
    promised = poll_intervals(
        n_active=0,
        n_idle=n,
        n_agents=1,
        active_seconds=ACTIVE_SECONDS,
        idle_seconds=IDLE_SECONDS,
        lists_seconds=LISTS_SECONDS,
        budget_per_second=budget,
    ).idle
    with (
        h.workdir(args.workdir, "cs-bench-remote-") as work,
        h.emulator(chunk_delay=0.0, rate_limit=GATEWAY[0], rate_window=GATEWAY[1], list_updated_at="on") as emu,
    ):
        aid = emu.agent_id("Demo Agent")
        cids = h.seed(emu, aid, n, args.messages)
        root = h.make_root(work / "root")
        config = h.write_config(work / "daemon.yaml", url=emu.base_url, root=root, state_dir=work / "state")
        with h.Daemon(config, work) as daemon:
            daemon.wait_ready()
            mirrored = h.wait_mirrored(root, cids, timeout=60 + 2 * n)
            first_mirror = mirrored - daemon.started
            folders = h.conversation_folders(root)
            # Conversations from the middle of the list: neither the newest nor the oldest.
            step = max(1, n // (args.hinted + args.sampled + 1))
            picked = cids[step::step]
            hinted, sampled = picked[: args.hinted], picked[args.hinted : args.hinted + args.sampled]

            start, texts = _add_elsewhere(emu, hinted, "hinted")
            seen = _appeared(folders, texts, LISTS_SECONDS * 3 + 60)
            missing = len(texts) - len(seen)
            with_hints = max(seen.values()) - start if not missing else float("inf")

            settled = float("nan")
            if sampled and args.settle:
                # Idle for real: every conversation's files and data frames listed once (a first mirror leaves
                # them to the background lane, where they come before the polls).
                def listed_all() -> bool:
                    log = h.requests_since(emu, daemon.started, methods=("GET",))
                    files = {r.path for r in log if r.path.endswith("/files")}
                    frames = {r.path for r in log if r.path.endswith("/data-frames")}
                    return len(files) >= n and len(frames) >= n

                h.wait_until(listed_all, 60 + 3 * n / 1.5, "every files and frames listing", interval=1.0)
                settled = time.time() - daemon.started
            if sampled:
                emu.configure(list_updated_at="off")
                window = time.time()
                at, texts = _add_elsewhere(emu, sampled, "polled")
                seen = _appeared(folders, texts, 3 * promised + 120)
                missing += len(texts) - len(seen)
                changes = sorted(t - at for t in seen.values()) + [float("inf")] * (len(texts) - len(seen))
                time.sleep(max(0.0, window + WINDOW_INTERVALS * promised - time.time()))  # the measurement window
                untouched = [c for c in cids if c not in hinted and c not in sampled]
                without = _longest_gaps(emu, untouched, window, time.time())
            else:  # --sampled 0: the first phase only; the idle rate is measured over --idle-window more seconds
                without = changes = [float("nan")]
                time.sleep(args.idle_window)  # a measurement window, not a wait for something
            ended = time.time()
            # All the daemon's requests but the reads the list announced (first-look lane, not background).
            announced = tuple(f"{cid}/messages" for cid in hinted)
            log = [r for r in h.requests_since(emu, start) if r.started <= ended and not r.path.endswith(announced)]
            idle_rate = len(log) / (ended - start)
            status_429 = sum(1 for r in h.requests_since(emu, 0.0) if r.status == 429)
    target = LISTS_SECONDS + SLACK
    h.report(
        f"remote changes ({n} idle conversations x {args.messages} messages, server limit "
        f"{GATEWAY[0]}/{GATEWAY[1]:g} s, default config)",
        [
            h.Row("first mirror (every transcript)", first_mirror, "s"),
            h.Row("files and frames all listed (--settle 1) after", settled, "s"),
            h.Row(
                f"with updated_at: slowest of {len(hinted)}",
                with_hints,
                "s",
                None,
                f"<= {target:g} s",
                with_hints <= target,
            ),
            h.Row(f"without: {len(sampled)} change(s) made elsewhere, slowest", changes[-1], "s"),
            h.Row(
                f"without: longest gap between reads, {len(without)} conversations (measured worst)",
                without[-1],
                "s",
                promised,
                "1 interval",
            ),
            h.Row("without: median of those gaps", without[len(without) // 2], "s"),
            h.Row("idle request rate", idle_rate, "req/s", budget, f"<= {budget:g} req/s", idle_rate <= budget),
            h.Row("429 answers", status_429, "", None, "0", status_429 == 0),
        ],
        notes=[
            f"promised = the poll policy's idle interval for {n} idle conversations: (N + 2) / 1.5 = {promised:.0f} s; "
            f"right after a first mirror a first poll may come up to 3 intervals after the conversation was first "
            f"seen ({3 * promised:.0f} s)",
            "times from the injection to the transcript's mtime (inf: not there before the bench's timeout, "
            f"{missing} such); the idle rate from the first injection to the end, the announced reads left out",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
