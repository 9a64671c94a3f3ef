"""The long crash campaign: SIGKILL ``convsync run`` at least 200 times inside real work, then check everything.

    .venv/bin/python bench/crash_campaign.py                 # 200 kills, a random seed (printed)
    .venv/bin/python bench/crash_campaign.py --kills 500 --seed 1234 --keep /tmp/campaign
    .venv/bin/python bench/crash_campaign.py --enumerate [--rounds 2]   # a kill right after every durable step

``--enumerate`` lists the durable steps (``convsync.killpoints.STEPS``) and gives the daemon one life per step
(per round): it runs with ``CONVSYNC_KILL_AT=<step>@<n>`` and kills itself right after the ``n``-th time it
completes that step; the workload is nudged to do what reaches it. A step no life reached is printed and fails
the run.

Prints the seed and the figures (kills by phase, prompts, uploads, downloads, exports, lost, duplicated, torn files,
temp files left). Exits 0 only when nothing was lost, nothing duplicated, nothing torn and the mirror converged;
1 otherwise. The harness and what each figure means: ``tests/campaign/crash.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.campaign.crash import Settings, run_campaign  # noqa: E402 - the repo root goes on sys.path first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: random)")
    parser.add_argument("--conversations", type=int, default=3, help="conversations made before the start")
    parser.add_argument("--new-folders", type=int, default=4, help="conversations made by mkdir during the run")
    parser.add_argument("--keep", type=Path, default=None, help="work in this (new) folder and keep it")
    parser.add_argument("--enumerate", action="store_true", help="kill right after each durable step instead")
    parser.add_argument("--rounds", type=int, default=1, help="with --enumerate: lives per step (default 1)")
    args = parser.parse_args(argv)
    # A client killed mid-upload makes Starlette raise ClientDisconnect, which uvicorn logs with a traceback.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    steps: tuple[str, ...] = ()
    if args.enumerate:
        from convsync.killpoints import STEPS

        steps = tuple(STEPS) * args.rounds
        print(f"durable steps ({len(STEPS)}; {len(steps)} lives):", flush=True)
        for name, what in STEPS.items():
            print(f"  {name:22} {what}", flush=True)
    settings = Settings(
        seed=seed,
        kills=len(steps) or args.kills,
        steps=steps,
        conversations=args.conversations,
        new_folders=args.new_folders,
        settle_seconds=300.0,
        log=lambda line: print(line, flush=True),
    )
    started = time.monotonic()
    if args.keep is not None:
        result = run_campaign(settings, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="convsync-crash-campaign-") as tmp:
            result = run_campaign(settings, Path(tmp) / "campaign")
    print(result.figures(), flush=True)
    if steps:
        reached = sum(1 for name in STEPS if result.phases[name])
        print(f"steps killed at: {reached} of {len(STEPS)}", flush=True)
    print(f"verdict: {'PASS' if result.ok else 'FAIL'} in {time.monotonic() - started:.0f} s (seed {seed})")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
