"""`pip install .` without extras: the commands that need an extra say how to add it (a real, bare venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install .` (no extras) from a copy of this checkout; returns its bin directory."""
    where = tmp_path_factory.mktemp("bare")
    source = where / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "convsync", source / "convsync", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=120)
    bin_dir = where / "venv" / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", str(source)], check=True, timeout=600, capture_output=True)
    return bin_dir


@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_command_without_its_extra_says_how_to_install_it(bare_venv: Path, command: str) -> None:
    """`convsync emulator`/`demo` without the extra exit 72 with the pip line to add it, not "a bug"."""
    done = subprocess.run(
        [str(bare_venv / "convsync"), command], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 72, done.stderr
    assert "pip install 'convsync[emulator]'" in done.stderr
    assert "bug" not in done.stderr
