"""Bench 2, stream latency: the emulator emitting a text delta → the text readable in ``transcript.md``.

A ``/slow <chunks> <ms>`` prompt makes the scripted agent stream ``chunks`` deltas ``ms`` apart. The emulator
logs each emitted delta with its time (``stream_log``); a reader thread blocked in inotify on the conversation
folder reads ``transcript.md`` after every change and keeps each version with the time it was read. A delta's
latency is the time of the first version in which its text is readable minus the time it was emitted.

Baseline, same run: a bare script that POSTs the same prompt with httpx, parses the SSE lines and appends each
text delta to a file with one ``write``; the same reader measures it.

Target: p99 ≤ 20 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness as h
import httpx


def _latencies(deltas: list[Any], tail: h.FileTail, after: bytes) -> tuple[list[float], int]:
    """For each delta (in emission order) the delay until its text was readable; and how many were never seen.

    The deltas are looked for in order, each at or after the end of the previous one, starting after ``after``
    (the prompt's text) in each version of the file: appends keep earlier offsets, so the search never goes
    back.
    """
    versions = tail.versions
    out: list[float] = []
    missing = 0
    vi, pos = 0, -1
    for delta in deltas:
        needle = delta.text.encode()
        for j in range(vi, len(versions)):
            seen, content = versions[j]
            if pos < 0:
                start = content.find(after)
                if start < 0:
                    continue
                pos = start + len(after)
            idx = content.find(needle, pos)
            if idx >= 0:
                out.append(seen - delta.emitted)
                vi, pos = j, idx + len(needle)
                break
        else:
            missing += 1
    return out, missing


def _deltas_after(emu: Any, since: float) -> list[Any]:
    return [d for d in list(emu.stream_log) if d.emitted >= since and d.text]


def _wait_reply(emu: Any, cid: str, since: float) -> None:
    record = h.wait_until(
        lambda: h.requests_since(emu, since, methods=("POST",), path_part=f"{cid}/stream"),
        60,
        "the stream request",
    )[0]
    h.wait_until(lambda: h.finished(record), 300, "the reply to end")


def _daemon_run(emu: Any, aid: str, work: Path, prompt: str) -> tuple[list[float], int, int]:
    cid = h.create_conversation(emu, aid, "stream latency")
    root = h.make_root(work / "daemon")
    config = h.write_config(work / "daemon.yaml", url=emu.base_url, root=root, state_dir=work / "state")
    with h.Daemon(config, work) as daemon:
        daemon.wait_ready()
        folder = h.folder_of(root, cid)
        tail = h.FileTail(folder / "transcript.md")
        try:
            since = h.editor_save(folder / "prompt.txt", prompt + "\n")
            _wait_reply(emu, cid, since)
            deltas = _deltas_after(emu, since)
            final = "".join(d.text for d in deltas).encode()
            # The whole reply is on disk at the latest once the daemon has rendered the final message.
            h.wait_until(lambda: final in (folder / "transcript.md").read_bytes(), 30, "the whole reply on disk")
        finally:
            tail.close()
    lat, missing = _latencies(deltas, tail, prompt.encode())
    return lat, missing, len(deltas)


def _baseline_run(emu: Any, aid: str, work: Path, prompt: str) -> tuple[list[float], int, int]:
    cid = h.create_conversation(emu, aid, "stream latency baseline")
    out = work / "baseline" / "transcript.md"
    out.parent.mkdir()
    out.write_text(prompt + "\n")
    tail = h.FileTail(out)
    try:
        since = time.time()
        subprocess.run(
            [sys.executable, __file__, "--baseline-streamer", emu.base_url, aid, cid, str(out), prompt],
            env={"CONVSYNC_API_KEY": emu.api_key, "PATH": "/usr/bin:/bin"},
            check=True,
            timeout=600,
        )
        deltas = _deltas_after(emu, since)
    finally:
        tail.close()
    lat, missing = _latencies(deltas, tail, prompt.encode())
    return lat, missing, len(deltas)


def baseline_streamer(url: str, aid: str, cid: str, out: str, prompt: str) -> None:
    """The baseline: httpx streaming POST, minimal SSE parsing, one append per text delta."""
    headers = {"Authorization": f"Bearer {os.environ['CONVSYNC_API_KEY']}"}
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)
    with (
        httpx.Client(base_url=url, headers=headers, timeout=None) as client,
        client.stream("POST", f"/agents/{aid}/conversations/{cid}/stream", json={"content": prompt}) as r,
    ):
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            delta = event.get("delta") or {}
            path = str(delta.get("path", ""))
            if delta.get("op") == "concat_string" and path.endswith(("/text", "/thought")):
                os.write(fd, str(delta["value"]).encode())
            elif delta.get("op") == "add" and path.startswith("/content/") and isinstance(delta.get("value"), dict):
                part = delta["value"]
                os.write(fd, str(part.get("text") or part.get("thought") or "").encode())
            elif delta.get("op") == "add" and path == "/content" and isinstance(delta.get("value"), list):
                for part in delta["value"]:
                    os.write(fd, str(part.get("text") or part.get("thought") or "").encode())
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = h.size_args(argv, __doc__ or "", chunks=(40, 400), chunk_ms=(25, 25))
    prompt = f"/slow {args.chunks} {args.chunk_ms}"
    ms = 1000.0
    with h.workdir(args.workdir, "cs-bench-stream-") as work, h.emulator(chunk_delay=0.0) as emu:
        aid = emu.agent_id("Demo Agent")
        base, base_missing, base_n = _baseline_run(emu, aid, work, prompt)
        mine, missing, n = _daemon_run(emu, aid, work, prompt)
    p50, p99 = h.percentile(mine, 50) * ms, h.percentile(mine, 99) * ms
    b50, b99 = h.percentile(base, 50) * ms, h.percentile(base, 99) * ms
    h.report(
        f"stream latency (delta emitted → readable in transcript.md; {prompt!r})",
        [
            h.Row("stream latency p50", p50, "ms", b50),
            h.Row("stream latency p99", p99, "ms", b99, "<= 20 ms", p99 <= 20),
            h.Row(
                "stream latency max",
                max(mine, default=float("nan")) * ms,
                "ms",
                max(base, default=float("nan")) * ms,
            ),
            h.Row("deltas not found in file", missing, "", base_missing, "0", missing == 0),
        ],
        notes=[f"{n} deltas (baseline {base_n}); baseline: httpx SSE client appending each text delta to a file"],
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-streamer":
        baseline_streamer(*sys.argv[2:7])
        sys.exit(0)
    sys.exit(main())
