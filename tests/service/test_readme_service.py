"""The README's "Run as a service" commands work as written (URL and key swapped for the emulator's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.service.test_unit_file import settings

REPO = Path(__file__).resolve().parents[2]
KEY = "s4w_test-key"


def service_commands() -> str:
    """The first shell block of the README's "Run as a service" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run as a service", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the section has a ```sh block"
    return match.group(1)


def test_readme_service_commands_run_as_written(isolated_home: Path, tmp_path: Path) -> None:
    """Key file, init, doctor and service install succeed in a fresh home and leave a unit that runs this convsync."""
    commands = service_commands()
    assert "https://HOST/tenants/TENANT/api/v2" in commands
    assert "s4w_YOUR_KEY" in commands
    bin_dir = Path(sys.executable).parent
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as emu:
        script = commands.replace("https://HOST/tenants/TENANT/api/v2", emu.base_url).replace("s4w_YOUR_KEY", KEY)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            # The user's PATH has the installed convsync; systemctl --user cannot reach a manager here, so
            # `service install` prints the systemctl commands instead of running them.
            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"},
            timeout=120,
            check=False,
        )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed." in done.stdout
    assert "systemctl --user enable --now convsync.service" in done.stdout
    key_file = isolated_home / ".config/convsync/api-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    unit = settings((isolated_home / ".config/systemd/user/convsync.service").read_text())
    assert unit["ExecStart"] == f"{bin_dir / 'convsync'} run --config {isolated_home / '.config/convsync/config.yaml'}"
