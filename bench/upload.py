"""Bench: a big file dropped into ``inbox/`` and uploaded by ``convsync.mirror.inbox.upload``, against curl.

The emulator runs in this process on a loopback port. The file (``--size-mib``, default 2048) is written once.
The baseline is ``curl -F files=@FILE`` to a conversation; the measured side is a child process running the
inbox path (``InboxTracker.scan`` → ``upload``: re-check, crash check, one streamed multipart request,
re-stat, move to ``files/``) into another conversation, reporting its time and peak RSS (``VmHWM``). After a
small warm-up of each, the two alternate for ``--rounds`` rounds (default 3; which goes first alternates too,
a fresh conversation each upload): on a shared 2-core machine one run of each, in a fixed order, measures
the machine as much as the code.

Prints the best and the median throughput of each (target: best >= 0.9x curl's best) and the child's peak
RSS. Exits 1 when a limit is broken: peak RSS >= ``--rss-limit-mib`` (150) or a server-side sha256 differs
from the local one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from convsync.api.client import AgentClient
from convsync.mirror.inbox import InboxTracker, upload

MiB = 1024 * 1024


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child(url: str, key: str, aid: str, cid: str, folder: Path) -> None:
    """The measured side: what the mirror worker does for a stable file in ``inbox/``."""
    with AgentClient(url, key, rate_limit=None, timeout=600) as client:
        ready = InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0).scan(folder / "inbox").ready
        start = time.perf_counter()
        outcome = upload(client, aid, cid, folder, ready)
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "moved": list(outcome.moved),
                "sha256": [f.sha256 for f in outcome.remote],
                "peak_rss": _vm_hwm(),
            }
        )
    )


def write_payload(path: Path, size_mib: int) -> str:
    """A file of ``size_mib`` MiB (random 1 MiB blocks, varied per MiB); its sha256."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(MiB))
    with path.open("wb") as f:
        for i in range(size_mib):
            block[:8] = i.to_bytes(8, "little")
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def curl_upload(url: str, key: str, aid: str, cid: str, path: Path) -> float:
    target = f"{url}/agents/{aid}/conversations/{cid}/files"
    start = time.perf_counter()
    out = subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", "-o", "/dev/null",
            "-H", f"Authorization: Bearer {key}",
            "-F", f"files=@{path}",
            target,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"curl failed ({out.returncode}): {out.stderr.strip()}")
    return seconds


def run_child(url: str, key: str, aid: str, cid: str, folder: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, key, aid, cid, str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the upload child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def inbox_upload(url: str, key: str, aid: str, cid: str, payload: Path, folder: Path) -> dict[str, Any]:
    """The child uploads ``payload`` from ``folder/inbox``; the file is then put back where it was."""
    (folder / "inbox").mkdir(parents=True)
    payload.rename(folder / "inbox" / payload.name)
    try:
        result = run_child(url, key, aid, cid, folder)
    finally:
        for place in (folder / "files" / payload.name, folder / "inbox" / payload.name):
            if place.exists():
                place.rename(payload)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rss-limit-mib", type=float, default=150.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating uploads of curl and the inbox path")
    parser.add_argument("--child", nargs=5, metavar=("URL", "KEY", "AID", "CID", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, key, aid, cid, folder = args.child
        child(url, key, aid, cid, Path(folder))
        return 0

    # Only the parent loads the harness: it imports the emulator, whose libraries would inflate child RSS.
    import harness as h

    work = Path(tempfile.mkdtemp(prefix="convsync-bench-upload-"))
    curl_runs: list[float] = []
    ours_runs: list[dict[str, Any]] = []
    server_shas: list[str | None] = []
    try:
        with h.emulator() as emu:
            key = h.API_KEY
            url = emu.base_url
            aid = emu.agent_id("Demo Agent")
            with AgentClient(url, key, rate_limit=None) as client:

                def conversation(title: str) -> str:
                    return client.create_conversation(aid, title).id

                # Warm-up, not measured: the first connection, request and child start-up of each side.
                warm = work / "warm.bin"
                warm.write_bytes(b"warm")
                curl_upload(url, key, aid, conversation("upload bench warm-up (curl)"), warm)
                inbox_upload(url, key, aid, conversation("upload bench warm-up"), warm, work / "warm")

                payload = work / "payload.bin"
                local_sha = write_payload(payload, args.size_mib)
                for i in range(args.rounds):
                    cid_curl = conversation(f"upload bench {i} (curl)")
                    cid_ours = conversation(f"upload bench {i} (convsync)")
                    for side in ("curl", "ours") if i % 2 == 0 else ("ours", "curl"):
                        if side == "curl":
                            curl_runs.append(curl_upload(url, key, aid, cid_curl, payload))
                            server_shas.append(emu.file_hashes(cid_curl).get(payload.name))
                        else:
                            ours_runs.append(inbox_upload(url, key, aid, cid_ours, payload, work / f"conv-{i}"))
                            server_shas.append(emu.file_hashes(cid_ours).get(payload.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    size_mib = args.size_mib
    ours_rates = [size_mib / r["seconds"] for r in ours_runs]
    curl_rates = [size_mib / s for s in curl_runs]
    ours, theirs = max(ours_rates), max(curl_rates)
    rss_mib = max(r["peak_rss"] for r in ours_runs) / MiB
    sha_ok = all(s == local_sha for s in server_shas) and all(r["sha256"] == [local_sha] for r in ours_runs)
    moved_ok = all(r["moved"] == [payload.name] for r in ours_runs)
    rows = [
        h.Row(
            f"upload throughput ({size_mib} MiB), best",
            ours,
            "MiB/s",
            baseline=theirs,
            target=">= 0.9x curl",
            ok=ours >= 0.9 * theirs,
        ),
        h.Row(
            f"upload throughput ({size_mib} MiB), median",
            statistics.median(ours_rates),
            "MiB/s",
            baseline=statistics.median(curl_rates),
        ),
        h.Row("upload time, best", min(r["seconds"] for r in ours_runs), "s", baseline=min(curl_runs)),
        h.Row(
            "upload peak RSS",
            rss_mib,
            "MiB",
            target=f"< {args.rss_limit_mib:g} MiB",
            ok=rss_mib < args.rss_limit_mib,
        ),
        h.Row("server sha256 == local sha256", 1.0 if sha_ok else 0.0, target="1", ok=sha_ok),
    ]
    h.report(
        "upload (inbox/ → server)",
        rows,
        notes=[
            "baseline: curl -F files=@FILE to the same in-process emulator, same run",
            f"{args.rounds} round(s) after a warm-up, curl and the inbox path alternating (first side alternates)",
            "MiB/s per run: convsync "
            + ", ".join(f"{r:.1f}" for r in ours_rates)
            + "; curl "
            + ", ".join(f"{r:.1f}" for r in curl_rates),
            f"moved to files/: {moved_ok}",
        ],
    )
    broken = rss_mib >= args.rss_limit_mib or not sha_ok or not moved_ok
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
