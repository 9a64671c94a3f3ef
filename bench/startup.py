"""Bench 6, start-up: ``convsync run`` on an already-synced root, time to READY=1, and no write requests.

Set-up: the emulator is seeded with N conversations of M messages; a first ``convsync run`` mirrors them all
and is stopped with SIGTERM. Then ``convsync run`` starts again on the same root and state: the figure is the
time from spawning the process to its READY=1 on ``$NOTIFY_SOCKET``; every request it makes from spawn until a
few seconds after READY is checked, and none may be a write (POST, PUT, PATCH, DELETE).

Baseline, same run: a bare script (its own process, timed the same way) that does the least a start-up needs
to know the root is in sync with the server: list the agents and their conversations with httpx and read
every folder's ``.conversation`` marker.

Targets: READY in < 3 s; 0 write requests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import harness as h
import httpx

WRITES = ("POST", "PUT", "PATCH", "DELETE")
UNLIMITED = (100_000, 1.0)  # the set-up mirror measures nothing; don't wait on the limiter


def bare_startup(url: str, root: str) -> None:
    """The baseline: list agents and conversations, read every folder's marker, compare."""
    headers = {"Authorization": f"Bearer {os.environ['CONVSYNC_API_KEY']}"}
    remote: set[str] = set()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for agent in client.get("/agents").json()["data"]:
            remote.update(c["id"] for c in client.get(f"/agents/{agent['id']}/conversations").json()["data"])
    local = {m.read_text().strip() for m in Path(root).glob("*/*/.conversation")}
    if not remote <= local:
        raise SystemExit(f"{len(remote - local)} conversations are not mirrored")


def main(argv: list[str] | None = None) -> int:
    args = h.size_args(argv, __doc__ or "", conversations=(50, 1000), messages=(10, 50), runs=(3, 5))
    with h.workdir(args.workdir, "cs-bench-startup-") as work, h.emulator() as emu:
        aid = emu.agent_id("Demo Agent")
        cids = h.seed(emu, aid, args.conversations, args.messages)
        root = h.make_root(work / "root")
        setup = h.write_config(
            work / "setup.yaml", url=emu.base_url, root=root, state_dir=work / "state", rate_limit=UNLIMITED
        )
        with h.Daemon(setup, work) as first:
            first.wait_ready(timeout=1800)
            h.wait_mirrored(root, cids, timeout=1800)
        # The measured runs use the default configuration (rate limit included), as a user would.
        config = h.write_config(work / "startup.yaml", url=emu.base_url, root=root, state_dir=work / "state")

        ready_times: list[float] = []
        writes: list[str] = []
        before_ready: list[int] = []
        for _ in range(args.runs):
            daemon = h.Daemon(config, work).start()
            try:
                ready = daemon.wait_ready(timeout=120)
                ready_times.append(ready - daemon.started)
                time.sleep(3.0)  # a few seconds past READY: writes right after it count too
                seen = h.requests_since(emu, daemon.started)
                before_ready.append(sum(1 for r in seen if r.started <= ready))
                writes += [f"{r.method} {r.path}" for r in seen if r.method in WRITES]
            finally:
                daemon.stop()

        base_times: list[float] = []
        for _ in range(args.runs):
            spawned = time.time()
            subprocess.run(
                [sys.executable, __file__, "--bare", emu.base_url, str(root)],
                env={"CONVSYNC_API_KEY": emu.api_key, "PATH": "/usr/bin:/bin"},
                check=True,
                timeout=600,
            )
            base_times.append(time.time() - spawned)

    ready_med, base_med = h.percentile(ready_times, 50), h.percentile(base_times, 50)
    h.report(
        f"start-up (already-synced root, {args.conversations} conversations x {args.messages} messages)",
        [
            h.Row("time to READY=1 (median)", ready_med, "s", base_med, "< 3 s", ready_med < 3.0),
            h.Row(
                "time to READY=1 (worst)",
                max(ready_times),
                "s",
                max(base_times),
                "< 3 s",
                max(ready_times) < 3.0,
            ),
            h.Row("requests before READY", h.percentile(before_ready, 50), ""),
            h.Row("write requests", len(writes), "", None, "0", not writes),
        ],
        notes=[
            f"{args.runs} runs each; baseline: httpx lists agents + conversations, reads every folder marker",
            *(f"write request: {w}" for w in sorted(set(writes))[:10]),
        ],
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_startup(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
