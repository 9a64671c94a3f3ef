"""Bench 7, the request budget: a first mirror against a server that enforces its limit, as a new user meets it.

The emulator enforces the self-hosted gateway's 50 requests / 10 s (429 beyond); the daemon runs on its
default config (30 requests / 10 s, polls at most half of it). N conversations x 10 messages are seeded. The
figures are measured from the daemon's spawn and set against the request floor of the same run: the requests
the job needs (the agents and conversation lists of the first pass, one messages read per conversation) ÷ the
client's budget rate.

- time until the 10 newest conversations (the server lists newest first) have their ``transcript.md``:
  ≤ 1.5x their floor;
- time until every conversation has its ``transcript.md``: ≤ 1.15x the floor;
- 429 answers received: 0;
- a prompt saved into the oldest conversation's folder 5 s into the first mirror: save → ``POST …/stream``
  ≤ debounce + 150 ms.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import harness as h

DEFAULT_RATE = (30, 10.0)  # the daemon's default (config.example.yaml)
GATEWAY = (50, 10.0)  # the self-hosted gateway's limit, enforced by the emulator
DEBOUNCE_MS = 100  # the default
PROMPT_AT = 5.0  # seconds after the spawn
NEWEST = 10


def _first_mirror(emu: Any, aid: str, work: Path, conversations: int, messages: int) -> dict[str, Any]:
    cids = h.seed(emu, aid, conversations, messages)
    listed = [c["id"] for c in emu.conversations(aid)]  # the server's order, newest first (read in-process)
    newest = [c for c in listed if c in set(cids)][:NEWEST]
    oldest = [c for c in listed if c in set(cids)][-1]
    root = h.make_root(work / "root")
    config = h.write_config(work / "daemon.yaml", url=emu.base_url, root=root, state_dir=work / "state")
    since = time.time()
    with h.Daemon(config, work) as daemon:
        ready = daemon.wait_ready()
        t0 = daemon.started
        folder = h.folder_of(root, oldest, timeout=120)
        time.sleep(max(0.0, t0 + PROMPT_AT - time.time()))  # the moment of the save, not synchronisation
        saved = h.editor_save(folder / "prompt.txt", "a question asked during the first mirror\n")
        post = h.wait_until(
            lambda: next(iter(h.requests_since(emu, since, methods=("POST",), path_part=f"{oldest}/stream")), None),
            120,
            "the prompt's stream request",
        )
        newest_at = h.wait_mirrored(root, newest, timeout=600)
        all_at = h.wait_mirrored(root, cids, timeout=1800)
        log = h.requests_since(emu, since)
    first_read = min(r.started for r in log if r.path.endswith("/messages") and r.method == "GET")
    lists = sum(1 for r in log if r.method == "GET" and r.started <= first_read and not r.path.endswith("/messages"))
    return {
        "ready": ready - t0,
        "newest": newest_at - t0,
        "all": all_at - t0,
        "lists": lists,
        "prompt": post.started - saved,
        "prompt_at": saved - t0,
        "status_429": sum(1 for r in log if r.status == 429),
        "requests": sum(1 for r in log if r.started <= all_at),
        "first_files": min((r.started - t0 for r in log if r.path.endswith("/files")), default=float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    args = h.size_args(argv, __doc__ or "", conversations=(60, 300), messages=(10, 10))
    rate = DEFAULT_RATE[0] / DEFAULT_RATE[1]
    with (
        h.workdir(args.workdir, "cs-bench-budget-") as work,
        h.emulator(chunk_delay=0.0, rate_limit=GATEWAY[0], rate_window=GATEWAY[1]) as emu,
    ):
        aid = emu.agent_id("Demo Agent")
        m = _first_mirror(emu, aid, work, args.conversations, args.messages)
    floor_newest = (m["lists"] + NEWEST) / rate
    floor_all = (m["lists"] + args.conversations) / rate
    limit_ms = DEBOUNCE_MS + 150
    h.report(
        f"request budget (first mirror of {args.conversations} conversations x {args.messages} messages, "
        f"server limit {GATEWAY[0]}/{GATEWAY[1]:g} s, default config)",
        [
            h.Row("READY=1 after", m["ready"], "s"),
            h.Row(
                f"{NEWEST} newest transcripts",
                m["newest"],
                "s",
                floor_newest,
                "<= 1.5x the floor",
                m["newest"] <= 1.5 * floor_newest,
            ),
            h.Row("every transcript", m["all"], "s", floor_all, "<= 1.15x the floor", m["all"] <= 1.15 * floor_all),
            h.Row("429 answers", m["status_429"], "", None, "0", m["status_429"] == 0),
            h.Row(
                f"prompt saved {m['prompt_at']:.1f} s in: save → POST",
                m["prompt"] * 1000,
                "ms",
                None,
                f"<= {limit_ms} ms",
                m["prompt"] * 1000 <= limit_ms,
            ),
            h.Row("first files listing after", m["first_files"], "s"),
            h.Row("requests until every transcript", m["requests"], ""),
        ],
        notes=[
            f"baseline = the request floor: ({m['lists']} list requests + transcripts read) / "
            f"{rate:g} requests/s (the client's default budget, {DEFAULT_RATE[0]}/{DEFAULT_RATE[1]:g} s)",
            "times from the daemon's spawn; transcripts by their mtimes, requests by the emulator's log",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
