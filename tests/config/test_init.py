"""`convsync init`: a private, commented config that loads; the root with its marker; no silent overwrite."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from convsync.config import load_config, write_initial_config

URL = "https://agents.example.com/tenants/t1/api/v2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_config_that_loads(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The written config is 0600 in a 0700 folder and loads to the given URL, root and key variable."""
    lines: list[str] = []
    root = isolated_home / "Mirror"

    code = write_initial_config(None, URL, root, "MY_KEY", False, out=lines.append)

    config_file = isolated_home / ".config/convsync/config.yaml"
    assert code == 0
    assert mode(config_file) == 0o600
    assert mode(config_file.parent) == 0o700
    monkeypatch.setenv("MY_KEY", "s4w_k")
    config = load_config(None)
    assert (config.url, config.root, config.api_key_source) == (URL, root, "environment variable MY_KEY")
    assert any(str(config_file) in line for line in lines)


def test_init_creates_root_with_marker(isolated_home: Path) -> None:
    """The root is created with its .convsync-root marker, and the output says so."""
    lines: list[str] = []

    write_initial_config(None, URL, None, None, False, out=lines.append)

    root = isolated_home / "Conversations"
    assert (root / ".convsync-root").is_file()
    assert any("Created the mirror root" in line for line in lines)


def test_init_prints_the_next_steps(tmp_path: Path) -> None:
    """The output ends with what to do next: export the key, doctor, run."""
    lines: list[str] = []

    write_initial_config(tmp_path / "c.yaml", URL, tmp_path / "r", None, False, out=lines.append)

    text = "\n".join(lines)
    assert "export CONVSYNC_API_KEY=" in text
    assert f"convsync doctor --config {tmp_path / 'c.yaml'}" in text
    assert f"convsync run --config {tmp_path / 'c.yaml'}" in text


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing config is kept and init exits 2 unless --force is given."""
    existing = tmp_path / "c.yaml"
    existing.write_text("keep me\n")

    code = write_initial_config(existing, URL, tmp_path / "r", None, False)

    assert code == 2
    assert existing.read_text() == "keep me\n"
    assert "--force" in capsys.readouterr().err


def test_init_overwrites_with_force(tmp_path: Path) -> None:
    """With --force the existing config is replaced."""
    existing = tmp_path / "c.yaml"
    existing.write_text("old\n")

    code = write_initial_config(existing, URL, tmp_path / "r", None, True, out=lambda _: None)

    assert code == 0
    assert URL in existing.read_text()


def test_init_needs_an_http_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --url, or with a URL that is not http(s), init writes nothing and says how to call it."""
    assert write_initial_config(tmp_path / "a.yaml", None, tmp_path / "r", None, False) == 2
    assert write_initial_config(tmp_path / "b.yaml", "host/api", tmp_path / "r", None, False) == 2

    err = capsys.readouterr().err
    assert "--url is required" in err
    assert "not an http(s) URL" in err
    assert not (tmp_path / "a.yaml").exists()
    assert not (tmp_path / "b.yaml").exists()


def test_init_command_line(tmp_path: Path) -> None:
    """`convsync init --config F --url U --root R` works from the command line and exits 0."""
    config = tmp_path / "conf" / "c.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "convsync", "init", "--config", str(config), "--url", URL, "--root",
         str(tmp_path / "r")],
        capture_output=True, text=True, env=os.environ.copy(), timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert config.is_file()
    assert (tmp_path / "r" / ".convsync-root").is_file()


def test_init_with_key_file_writes_a_config_that_reads_it(tmp_path: Path) -> None:
    """--api-key-file makes server.api_key_file the key source; the config then loads with that key."""
    key = tmp_path / "api-key"
    key.write_text("s4w_from-file\n")
    key.chmod(0o600)
    config_file = tmp_path / "c.yaml"

    write_initial_config(config_file, URL, tmp_path / "r", None, False, api_key_file=key, out=lambda _: None)

    config = load_config(config_file)
    assert config.api_key == "s4w_from-file"
    assert config.api_key_source == f"file {key}"


def test_init_with_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    """When the key file does not exist yet, the next steps show the private way to write it."""
    lines: list[str] = []
    key = tmp_path / "api-key"

    write_initial_config(tmp_path / "c.yaml", URL, tmp_path / "r", None, False, api_key_file=key, out=lines.append)

    assert any(f"(umask 077; printf '%s\\n' '<your API key>' > {key})" in line for line in lines)


def test_init_refuses_two_key_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--api-key-env and --api-key-file together are refused with exit 2."""
    code = write_initial_config(tmp_path / "c.yaml", URL, tmp_path / "r", "MY_KEY", False, api_key_file=tmp_path / "k")

    assert code == 2
    assert "not both" in capsys.readouterr().err


def test_init_quotes_awkward_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root whose name holds quotes, backslashes and `: ` still round-trips through the YAML."""
    root = tmp_path / 'my "mirror": a\\b #1'
    monkeypatch.setenv("CONVSYNC_API_KEY", "s4w_k")

    write_initial_config(tmp_path / "c.yaml", URL, root, None, False, out=lambda _: None)

    assert load_config(tmp_path / "c.yaml").root == root
