"""Server text in convsync's own error output: control characters escaped, convsync's lines not forgeable."""

from __future__ import annotations

from pathlib import Path

from convsync.emulator import EmulatorServer, FaultRule
from convsync.mirror.folders import init_root
from tests.cli.conftest import KEY_ENV, convsync, write_config

ALL_C0 = "".join(chr(i) for i in range(32))


def test_a_refusal_quoting_control_characters_is_printed_escaped(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A 401 whose message holds every C0 character: stderr shows them escaped, and only convsync's fix line."""
    root = tmp_path / "root"
    init_root(root)
    config = write_config(tmp_path / "config.yaml", emulator.base_url, root, tmp_path / "state")
    emulator.set_faults([FaultRule(status=401, body="gateway", message=f"no{ALL_C0}\n  fix: rm -rf ~")])
    done = convsync("run", "--config", str(config), env={KEY_ENV: emulator.api_key}, timeout=60)
    assert done.returncode == 77, done.stderr
    raw = {ch for line in done.stderr.split("\n") for ch in line if ord(ch) < 0x20}
    assert raw == set(), done.stderr
    assert "no\\0\\x01" in done.stderr
    assert "rm -rf" not in "".join(line for line in done.stderr.splitlines() if line.lstrip().startswith("fix:"))
