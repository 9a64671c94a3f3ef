"""`convsync init --profile NAME` adds a profile to a config without touching the rest of it."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import convsync

HAND_EDITED = """\
# my own notes: keep them
server:
  url: https://example.com/tenants/home/api/v2   # home tenant
  api_key_env: HOME_KEY
root: {root}
log_level: debug  # while I look at something
"""


def test_adding_a_profile_keeps_every_line_of_the_config(tmp_path: Path) -> None:
    """The old text stays byte for byte (comments included); the new profile loads; the default is unchanged."""
    config = tmp_path / "config.yaml"
    original = HAND_EDITED.format(root=tmp_path / "home")
    config.write_text(original)
    config.chmod(0o600)
    done = convsync(
        "--config",
        str(config),
        "init",
        "--profile",
        "work",
        "--url",
        "https://example.com/tenants/work/api/v2",
        "--root",
        str(tmp_path / "work"),
        "--api-key-env",
        "WORK_KEY",
    )
    assert done.returncode == 0, done.stderr
    assert config.read_text().startswith(original)
    assert (config.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "work" / ".convsync-root").is_file()
    work = convsync("--config", str(config), "--profile", "work", "status")
    assert work.returncode == 0, work.stderr  # it read the profile; no daemon ever ran: not a failure
    assert f"root {tmp_path / 'work'}" in work.stdout
    default = convsync("--config", str(config), "status")
    assert f"root {tmp_path / 'home'}" in default.stdout


def test_a_second_profile_goes_into_the_same_section(tmp_path: Path) -> None:
    """Two `init --profile` calls give one profiles: section with both entries."""
    config = tmp_path / "config.yaml"
    config.write_text(HAND_EDITED.format(root=tmp_path / "home"))
    for name in ("work", "play"):
        done = convsync(
            "--config",
            str(config),
            "init",
            "--profile",
            name,
            "--url",
            f"https://example.com/tenants/{name}/api/v2",
            "--root",
            str(tmp_path / name),
        )
        assert done.returncode == 0, done.stderr
    assert config.read_text().count("profiles:") == 1
    # No daemon ever ran with the profile's state directory: not a failure.
    assert convsync("--config", str(config), "--profile", "play", "status").returncode == 0


def test_a_profiles_section_followed_by_other_keys_is_not_edited(tmp_path: Path) -> None:
    """When profiles: is not the last key, nothing is written: exit 2 with the exact lines to add."""
    config = tmp_path / "config.yaml"
    text = (
        "profiles:\n  home:\n    server:\n      url: https://example.com/tenants/home/api/v2\n"
        f"    root: {tmp_path / 'home'}\nlog_level: info\n"
    )
    config.write_text(text)
    done = convsync(
        "--config",
        str(config),
        "init",
        "--profile",
        "work",
        "--url",
        "https://example.com/tenants/work/api/v2",
        "--root",
        str(tmp_path / "work"),
    )
    assert done.returncode == 2
    assert config.read_text() == text
    assert '  work:\n    server:\n      url: "https://example.com/tenants/work/api/v2"' in done.stdout


def test_an_existing_profile_name_is_refused(tmp_path: Path) -> None:
    """Adding a profile whose name is taken exits 2 and changes nothing."""
    config = tmp_path / "config.yaml"
    args = ["--config", str(config), "init", "--profile", "work", "--url", "https://example.com/tenants/w/api/v2"]
    assert convsync(*args, "--root", str(tmp_path / "w")).returncode == 0
    before = config.read_text()
    again = convsync(*args, "--root", str(tmp_path / "w2"))
    assert again.returncode == 2
    assert "already has a profile 'work'" in again.stderr
    assert config.read_text() == before


def test_a_symlinked_config_gets_the_profile_in_its_target(tmp_path: Path) -> None:
    """A config that is a symlink (dotfiles) stays a symlink; the profile lands in the file it points at."""
    target = tmp_path / "dotfiles" / "convsync.yaml"
    target.parent.mkdir()
    target.write_text(HAND_EDITED.format(root=tmp_path / "home"))
    link = tmp_path / "config.yaml"
    link.symlink_to(target)
    done = convsync(
        "--config",
        str(link),
        "init",
        "--profile",
        "work",
        "--url",
        "https://example.com/tenants/work/api/v2",
        "--root",
        str(tmp_path / "work"),
    )
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert "  work:\n" in target.read_text()
