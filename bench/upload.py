"""Bench: a big file dropped into ``inbox/`` and uploaded by ``convsync.mirror.inbox.upload``, against curl.

The emulator runs in this process on a loopback port. The file (``--size-mib``, default 2048) is written once;
``curl -F files=@FILE`` uploads it to one conversation (the baseline), then a child process runs the inbox
path (``InboxTracker.scan`` → ``upload``: re-check, crash check, one streamed multipart request, re-stat,
move to ``files/``) into another conversation and reports its time and peak RSS (``VmHWM``).

Prints throughput (convsync vs curl, target >= 0.9x) and the child's peak RSS. Exits 1 when a limit is
broken: peak RSS >= ``--rss-limit-mib`` (150) or the server's sha256 differs from the local one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rss-limit-mib", type=float, default=150.0)
    parser.add_argument("--child", nargs=5, metavar=("URL", "KEY", "AID", "CID", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, key, aid, cid, folder = args.child
        child(url, key, aid, cid, Path(folder))
        return 0

    # Only the parent loads the harness: it imports the emulator, whose libraries would inflate child RSS.
    import harness as h

    work = Path(tempfile.mkdtemp(prefix="convsync-bench-upload-"))
    try:
        with h.emulator() as emu:
            key = h.API_KEY
            with AgentClient(emu.base_url, key, rate_limit=None) as client:
                aid = emu.agent_id("Demo Agent")
                cid_curl = client.create_conversation(aid, "upload bench (curl)").id
                cid_ours = client.create_conversation(aid, "upload bench (convsync)").id
            payload = work / "payload.bin"
            local_sha = write_payload(payload, args.size_mib)
            size = args.size_mib * MiB

            warmup = work / "warmup.bin"
            warmup.write_bytes(b"warm")
            curl_upload(emu.base_url, key, aid, cid_curl, warmup)  # first connection and request, not measured
            curl_seconds = curl_upload(emu.base_url, key, aid, cid_curl, payload)

            folder = work / "conversation"
            (folder / "inbox").mkdir(parents=True)
            payload.rename(folder / "inbox" / "payload.bin")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", emu.base_url, key, aid, cid_ours, str(folder)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"the upload child failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            server_sha = emu.file_hashes(cid_ours).get("payload.bin")
            curl_sha = emu.file_hashes(cid_curl).get("payload.bin")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours = size / MiB / result["seconds"]
    theirs = size / MiB / curl_seconds
    rss_mib = result["peak_rss"] / MiB
    sha_ok = server_sha == local_sha == curl_sha and result["sha256"] == [local_sha]
    moved_ok = result["moved"] == ["payload.bin"]
    rows = [
        h.Row(
            f"upload throughput ({args.size_mib} MiB)",
            ours,
            "MiB/s",
            baseline=theirs,
            target=">= 0.9x curl",
            ok=ours >= 0.9 * theirs,
        ),
        h.Row("upload time", result["seconds"], "s", baseline=curl_seconds),
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
            f"moved to files/: {moved_ok}",
        ],
    )
    broken = rss_mib >= args.rss_limit_mib or not sha_ok or not moved_ok
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
