"""Bench: upload then download an N MiB file through ``AgentClient``, next to ``curl`` doing the same.

The emulator runs as ``convsync emulator`` in its own process (with a data dir, so files go to disk). The
client runs in a child process of its own (this script with ``--child``), so its peak RSS is its own: GNU
``time``'s ``%M`` for that child (see ``run_measured``), cross-checked with the ``VmHWM`` the child reads from
``/proc/self/status`` at its end; the larger of the two is reported. ``curl -F files=@…`` and ``curl -o`` move
the same file against the same emulator in the same run, measured the same way.

Checks (exit 1 when one fails): the client's peak RSS stays under 100 MiB; every copy (client download, curl
download, the server's ``file_hash``) has the source's sha256.

    bench/transfer.py [--size-mib 1024] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
API_KEY = "s4w_bench-transfer-0123456789"  # a throwaway key for the loopback emulator only
MiB = 1024 * 1024
RSS_LIMIT_MIB = 100.0


# --- the client, in its own process -------------------------------------------------------------------------


def child(base_url: str, aid: str, cid: str, source: Path, target: Path) -> int:
    """Upload ``source`` and download it to ``target`` with AgentClient; print timings as JSON."""
    from convsync.api.client import AgentClient  # only the child pays for the import

    with AgentClient(base_url, os.environ["BENCH_API_KEY"], rate_limit=None) as client:
        started = time.perf_counter()
        uploaded = client.upload_files(aid, cid, [("client.bin", source)])
        upload_s = time.perf_counter() - started
        started = time.perf_counter()
        with target.open("wb") as out:
            size = client.download_file(aid, cid, "client.bin", out)
        download_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "upload_s": upload_s,
                "download_s": download_s,
                "bytes": size,
                "server_sha256": uploaded[0].sha256 if uploaded else None,
                "vmhwm_kib": _vmhwm_kib(),
            }
        )
    )
    return 0


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- measuring child processes ------------------------------------------------------------------------------


def _gnu_time() -> str | None:
    """GNU time, whose ``%M`` is the command's own peak RSS (see ``run_measured``), or None."""
    path = shutil.which("time") or "/usr/bin/time"
    with contextlib.suppress(OSError):
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        if "GNU" in probe.stdout + probe.stderr:
            return path
    return None


def _poll_vmhwm(pid: int, peak: list[int], done: threading.Event) -> None:
    """Fallback without GNU time: the last VmHWM (KiB) read from /proc before the process exits."""
    while not done.is_set():
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        done.wait(0.005)


def run_measured(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``argv``; return (wall seconds, its peak RSS in MiB, stdout). Fails loudly on a non-zero exit.

    Not ``os.wait4``'s ``ru_maxrss``: Python starts children with vfork, and Linux carries the high-water
    mark of the memory replaced by ``exec`` (here: this big parent's) into the child's ``ru_maxrss``. GNU
    ``time`` forks a tiny copy of itself before ``exec``, so its ``%M`` is the command's own peak.
    """
    time_bin = _gnu_time()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "maxrss"
        command = [time_bin, "-f", "%M", "-o", str(report), *argv] if time_bin else list(argv)
        out_path, err_path = Path(scratch) / "out", Path(scratch) / "err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
            peak, done = [0], threading.Event()
            poller = threading.Thread(target=_poll_vmhwm, args=(proc.pid, peak, done))
            if time_bin is None:
                poller.start()
            code = proc.wait()
            elapsed = time.perf_counter() - started
            done.set()
            if poller.is_alive():
                poller.join()
        stdout = out_path.read_text(errors="replace")
        if code != 0:
            raise RuntimeError(f"{argv[0]} exited {code}: {err_path.read_text(errors='replace')[-2000:]}")
        if time_bin is not None:
            peak[0] = int(report.read_text().split()[-1])
    return elapsed, peak[0] / 1024.0, stdout


# --- the emulator -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def emulator_process(data_dir: Path) -> Iterator[str]:
    """``convsync emulator`` on a free loopback port; yields its base URL once it answers."""
    import httpx  # the parent only

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convsync",
            "emulator",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/tenants/demo/api/v2"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the emulator exited with {proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/agents", headers={"Authorization": f"Bearer {API_KEY}"}).is_success:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not answer within 60 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the bench ----------------------------------------------------------------------------------------------


def make_source(path: Path, size_mib: int) -> str:
    """Write ``size_mib`` MiB of incompressible bytes; return their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as out:
        for i in range(size_mib):
            chunk = i.to_bytes(8, "little") + block[8:]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def bench(size_mib: int, work: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness as h  # keeps the child free of the harness's imports

    from convsync.api.client import AgentClient

    source = work / "source.bin"
    print(f"transfer bench: {size_mib} MiB, work dir {work}", flush=True)
    expected = make_source(source, size_mib)
    size = size_mib * MiB
    with emulator_process(work / "emulator") as base:
        with AgentClient(base, API_KEY, rate_limit=None) as client:
            aid = next(a.id for a in client.list_agents() if a.name == "Demo Agent")
            cid = client.create_conversation(aid, "transfer bench").id

        child_env = {
            **os.environ,
            "BENCH_API_KEY": API_KEY,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        client_copy = work / "client-download.bin"
        _, client_rss, out = run_measured(
            [sys.executable, __file__, "--child", base, aid, cid, str(source), str(client_copy)], child_env
        )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        client_sha = sha256_of(client_copy)
        client_copy.unlink()

        files_url = f"{base}/agents/{aid}/conversations/{cid}/files"
        auth = ["-H", f"Authorization: Bearer {API_KEY}"]
        curl_up_s, curl_up_rss, _ = run_measured(
            [
                "curl",
                "-sS",
                "--fail",
                "-o",
                "/dev/null",
                *auth,
                "-F",
                f"files=@{source};filename=curl.bin",
                files_url,
            ]
        )
        curl_copy = work / "curl-download.bin"
        curl_down_s, curl_down_rss, _ = run_measured(
            ["curl", "-sS", "--fail", "-o", str(curl_copy), *auth, f"{files_url}/download/?file_ref=curl.bin"]
        )
        curl_sha = sha256_of(curl_copy)
        curl_copy.unlink()

        with AgentClient(base, API_KEY, rate_limit=None) as client:
            server = {f.file_ref: f.sha256 for f in client.list_files(aid, cid)}

    client_rss = max(client_rss, result["vmhwm_kib"] / 1024.0)
    rss_ok = client_rss < RSS_LIMIT_MIB
    hashes = {
        "client download": client_sha,
        "curl download": curl_sha,
        "server client.bin": server.get("client.bin"),
        "server curl.bin": server.get("curl.bin"),
        "upload answer": result.get("server_sha256"),
    }
    hashes_ok = all(value == expected for value in hashes.values()) and result["bytes"] == size
    curl_rss = max(curl_up_rss, curl_down_rss)
    rows = [
        h.Row("upload throughput", size_mib / result["upload_s"], "MiB/s", size_mib / curl_up_s),
        h.Row("download throughput", size_mib / result["download_s"], "MiB/s", size_mib / curl_down_s),
        h.Row("client peak RSS", client_rss, "MiB", curl_rss, f"< {RSS_LIMIT_MIB:g} MiB", rss_ok),
        h.Row("sha256 of every copy", 1.0 if hashes_ok else 0.0, "", None, "all equal", hashes_ok),
    ]
    notes = [
        f"{size_mib} MiB each way; baseline: curl -F files=@… (upload), curl -o (download), same emulator",
        f"client child: VmHWM {result['vmhwm_kib'] / 1024:.1f} MiB; curl peak RSS: upload "
        f"{curl_up_rss:.1f} MiB, download {curl_down_rss:.1f} MiB",
    ]
    if not hashes_ok:
        notes.append(f"expected {expected}; got {hashes}")
    h.report("transfer", rows, notes)
    return 0 if rss_ok and hashes_ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--child", nargs=5, metavar=("BASE", "AID", "CID", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        base, aid, cid, source, target = args.child
        return child(base, aid, cid, Path(source), Path(target))
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return bench(args.size_mib, args.dir)
    with tempfile.TemporaryDirectory(prefix="convsync-transfer-") as work:
        return bench(args.size_mib, Path(work))


if __name__ == "__main__":
    sys.exit(main())
