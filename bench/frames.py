"""Bench: exporting a big data frame to Parquet, through the native path and the JSON path, against curl.

The emulator runs in this process; ``/bigframe bench ROWS 10`` makes a frame of ``--rows`` (default
1,000,000) rows x 10 columns. Each path runs ``convsync.mirror.dataframes.export_frame`` in a child process
that reports its time and peak RSS (``VmHWM``):

- parquet path: the server's ``output_format=parquet`` response streamed to a temp file, renamed;
- JSON path: pages of up to 100,000 JSON rows typed and appended to a ``ParquetWriter``.

Baseline, same run: ``curl`` fetching the same Parquet response (``output_format=parquet&limit=-1``).
Prints the times, the ratio parquet-path/curl (target <= 1.2x) and both peak RSS figures. Exits 1 when a
limit is broken: JSON-path peak RSS >= ``--rss-limit-mib`` (300), or an export has the wrong row count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convsync.api.client import AgentClient
from convsync.mirror.dataframes import export_frame

MiB = 1024 * 1024
FRAME = "bench"


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child(url: str, key: str, aid: str, cid: str, out: Path, mode: str) -> None:
    """The measured side: one export as the mirror worker runs it."""
    with AgentClient(url, key, rate_limit=None, timeout=600) as client:
        (info,) = [f for f in client.list_data_frames(aid, cid) if f.name == FRAME]
        start = time.perf_counter()
        supported = None if mode == "parquet" else False
        result = export_frame(
            client, aid, cid, info, out, file_name=f"{mode}.parquet", parquet_supported=supported
        )
        seconds = time.perf_counter() - start
    print(
        json.dumps({"seconds": seconds, "rows": result.rows, "method": result.method, "peak_rss": _vm_hwm()})
    )


def run_child(url: str, key: str, aid: str, cid: str, out: Path, mode: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, key, aid, cid, str(out), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} export child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def curl_parquet(url: str, key: str, aid: str, cid: str, out: Path) -> float:
    target = f"{url}/agents/{aid}/conversations/{cid}/data-frames/{FRAME}?output_format=parquet&limit=-1"
    start = time.perf_counter()
    proc = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-o", str(out), "-H", f"Authorization: Bearer {key}", target],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"curl failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rss-limit-mib", type=float, default=300.0)
    parser.add_argument(
        "--child", nargs=6, metavar=("URL", "KEY", "AID", "CID", "OUT", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        url, key, aid, cid, out, mode = args.child
        child(url, key, aid, cid, Path(out), mode)
        return 0

    # Only the parent loads the harness: it imports the emulator, whose libraries would inflate child RSS.
    import harness as h  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="convsync-bench-frames-"))
    try:
        with h.emulator(parquet_output=True) as emu:
            key = h.API_KEY
            with AgentClient(emu.base_url, key, rate_limit=None, timeout=900) as client:
                aid = emu.agent_id("Demo Agent")
                cid = client.create_conversation(aid, "frames bench").id
                made = time.perf_counter()
                client.post_message(aid, cid, f"/bigframe {FRAME} {args.rows} 10")
                made = time.perf_counter() - made
            curl_parquet(
                emu.base_url, key, aid, cid, work / "curl.parquet"
            )  # warm-up (file cache), not measured
            curl_seconds = curl_parquet(emu.base_url, key, aid, cid, work / "curl.parquet")
            native = run_child(emu.base_url, key, aid, cid, work / "out", "parquet")
            rows = run_child(emu.base_url, key, aid, cid, work / "out", "json")
            curl_bytes = (work / "curl.parquet").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)

    native_rss, json_rss = native["peak_rss"] / MiB, rows["peak_rss"] / MiB
    counts_ok = native["rows"] == rows["rows"] == args.rows
    methods_ok = (native["method"], rows["method"]) == ("parquet", "json")
    ratio_target = native["seconds"] <= 1.2 * curl_seconds
    table = [
        h.Row(
            f"frame export, parquet path ({args.rows:,} rows x 10)",
            native["seconds"],
            "s",
            baseline=curl_seconds,
            target="<= 1.2x curl",
            ok=ratio_target,
        ),
        h.Row("frame export, parquet path peak RSS", native_rss, "MiB"),
        h.Row(
            f"frame export, JSON path ({args.rows:,} rows x 10)", rows["seconds"], "s", baseline=curl_seconds
        ),
        h.Row(
            "frame export, JSON path peak RSS",
            json_rss,
            "MiB",
            target=f"< {args.rss_limit_mib:g} MiB",
            ok=json_rss < args.rss_limit_mib,
        ),
        h.Row("frame export, rows written == rows", 1.0 if counts_ok else 0.0, target="1", ok=counts_ok),
    ]
    h.report(
        "data-frame export",
        table,
        notes=[
            f"baseline: curl fetching output_format=parquet&limit=-1 ({curl_bytes / MiB:.1f} MiB)",
            f"/bigframe synthesis took {made:.1f} s (not measured)",
        ],
    )
    broken = json_rss >= args.rss_limit_mib or not counts_ok or not methods_ok
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
