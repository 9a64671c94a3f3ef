"""Several servers or tenants from one config: profiles, each its own daemon and its own unit instance."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.mirror.folders import init_root
from tests.cli.conftest import convsync
from tests.waiting import wait_until

UNIT_DIR_PARTS = ("systemd", "user")


@pytest.fixture
def tenants() -> Iterator[tuple[EmulatorServer, EmulatorServer]]:
    """Two emulators, tenants alpha and beta, each with its own key and its own conversation."""
    with (
        EmulatorServer(EmulatorOptions(api_key="s4w_alpha-key", tenant="alpha", chunk_delay=0.0)) as alpha,
        EmulatorServer(EmulatorOptions(api_key="s4w_beta-key", tenant="beta", chunk_delay=0.0)) as beta,
    ):
        alpha.create_conversation(alpha.agent_id("Demo Agent"), "Alpha plans")
        beta.create_conversation(beta.agent_id("Demo Agent"), "Beta plans")
        yield alpha, beta


def two_profiles(tmp_path: Path, alpha: EmulatorServer, beta: EmulatorServer) -> Path:
    config = tmp_path / "tenants.yaml"
    config.write_text(
        "# shared by both profiles\n"
        "log_level: info\n"
        "profiles:\n"
        "  alpha:\n"
        f"    server:\n      url: {alpha.base_url}\n      api_key_env: ALPHA_KEY\n"
        f"    root: {tmp_path / 'alpha-root'}\n"
        "  beta:\n"
        f"    server:\n      url: {beta.base_url}\n      api_key_env: BETA_KEY\n"
        f"    root: {tmp_path / 'beta-root'}\n",
        encoding="utf-8",
    )
    init_root(tmp_path / "alpha-root")
    init_root(tmp_path / "beta-root")
    return config


def unit_dir() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]).joinpath(*UNIT_DIR_PARTS)


def no_systemctl(tmp_path: Path) -> dict[str, str]:
    """An environment where `systemctl` is not on PATH (install writes files and prints the commands)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


def instance_command(name: str) -> tuple[list[str], dict[str, str]]:
    """What systemd would run for convsync@NAME: the template's ExecStart with the drop-in's Environment=."""
    template = (unit_dir() / "convsync@.service").read_text()
    exec_start = next(line for line in template.splitlines() if line.startswith("ExecStart="))
    drop_in = (unit_dir() / f"convsync@{name}.service.d" / "convsync.conf").read_text()
    environment = next(line for line in drop_in.splitlines() if line.startswith("Environment="))
    words = shlex.split(environment.removeprefix("Environment=").replace("%%", "%"))
    return shlex.split(exec_start.removeprefix("ExecStart=")), dict(w.split("=", 1) for w in words)


def test_two_profiles_run_side_by_side_into_two_roots(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """Installed as convsync@alpha and convsync@beta, the two instances (each run as its unit says: the
    template's ExecStart, the drop-in's environment) mirror two tenants into two roots, each only its own."""
    alpha, beta = tenants
    config = two_profiles(tmp_path, alpha, beta)
    for name in ("alpha", "beta"):
        installed = convsync(
            "--config", str(config), "--profile", name, "service", "install", env=no_systemctl(tmp_path)
        )
        assert installed.returncode == 0, installed.stderr + installed.stdout
    keys = {"ALPHA_KEY": alpha.api_key, "BETA_KEY": beta.api_key}
    procs = []
    for name in ("alpha", "beta"):
        argv, unit_env = instance_command(name)
        procs.append(subprocess.Popen(argv, env={**os.environ, **keys, **unit_env}, stderr=subprocess.PIPE, text=True))
    try:
        alpha_folder = tmp_path / "alpha-root" / "Demo Agent" / "Alpha plans"
        beta_folder = tmp_path / "beta-root" / "Demo Agent" / "Beta plans"
        wait_until(lambda: alpha_folder.is_dir() and beta_folder.is_dir(), timeout=30, what="both roots mirrored")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errors = [proc.communicate(timeout=30)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    assert not (tmp_path / "alpha-root" / "Demo Agent" / "Beta plans").exists()
    assert not (tmp_path / "beta-root" / "Demo Agent" / "Alpha plans").exists()


def test_profile_from_the_command_line_or_the_environment(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """`--profile beta` and `CONVSYNC_PROFILE=beta` choose the same profile."""
    config = two_profiles(tmp_path, *tenants)
    by_option = convsync("--config", str(config), "status", "--json", "--profile", "beta")
    by_env = convsync("--config", str(config), "status", "--json", env={"CONVSYNC_PROFILE": "beta"})
    assert by_option.stdout == by_env.stdout
    assert str(tmp_path / "beta-root") in by_option.stdout


def test_a_profile_has_its_own_state_directory(tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]) -> None:
    """`status` of each profile reads that profile's own state (no key needed): its conversation only."""
    alpha, beta = tenants
    config = two_profiles(tmp_path, alpha, beta)
    for name, key in (("alpha", alpha.api_key), ("beta", beta.api_key)):
        done = convsync("--config", str(config), "--profile", name, "sync", env={f"{name.upper()}_KEY": key})
        assert done.returncode == 0, done.stderr
    shown = convsync("status", "--config", str(config), "--profile", "beta")
    assert shown.returncode == 0, shown.stderr  # it read beta's state; no daemon ever ran: not a failure
    assert "Demo Agent/Beta plans" in shown.stdout
    assert "Alpha plans" not in shown.stdout


def test_several_profiles_and_none_chosen_is_a_config_error(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """With two profiles and no --profile, a command exits 78 naming the profiles and the fix."""
    config = two_profiles(tmp_path, *tenants)
    done = convsync("status", "--config", str(config))
    assert done.returncode == 78
    assert "alpha, beta" in done.stderr
    assert "--profile NAME" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_service_install_per_profile_writes_template_instances(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """`service install` for profile beta after alpha adds convsync@beta and leaves alpha's unit byte for byte;
    the template with each instance's drop-in passes systemd-analyze verify."""
    config = two_profiles(tmp_path, *tenants)
    env = no_systemctl(tmp_path)
    first = convsync("--config", str(config), "--profile", "alpha", "service", "install", env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    template = unit_dir() / "convsync@.service"
    alpha_drop_in = unit_dir() / "convsync@alpha.service.d" / "convsync.conf"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (template, alpha_drop_in)}

    second = convsync("--config", str(config), "--profile", "beta", "service", "install", env=env)

    assert second.returncode == 0, second.stderr + second.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (template, alpha_drop_in)} == before
    assert "systemctl --user enable --now convsync@beta.service" in second.stdout
    assert not (unit_dir() / "convsync.service").exists()
    beta_drop_in = (unit_dir() / "convsync@beta.service.d" / "convsync.conf").read_text()
    assert f'"CONVSYNC_CONFIG={config}" "CONVSYNC_PROFILE=beta"' in beta_drop_in
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for name in ("alpha", "beta"):
        verified = subprocess.run(
            ["systemd-analyze", "--user", "verify", str(unit_dir() / f"convsync@{name}.service")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "XDG_RUNTIME_DIR": str(runtime),
                "SYSTEMD_LOG_LEVEL": "notice",
                "SYSTEMD_UNIT_PATH": f"{unit_dir()}:",
            },
        )
        assert (verified.returncode, verified.stderr) == (0, ""), name


def test_an_instance_is_never_replaced_by_another_config(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """Installing profile alpha of another config is refused (exit 2); the installed instance stays as it was."""
    config = two_profiles(tmp_path, *tenants)
    env = no_systemctl(tmp_path)
    assert convsync("--config", str(config), "--profile", "alpha", "service", "install", env=env).returncode == 0
    drop_in = unit_dir() / "convsync@alpha.service.d" / "convsync.conf"
    before = drop_in.read_bytes()
    other = tmp_path / "other" / "tenants.yaml"
    other.parent.mkdir()
    other.write_text(config.read_text())
    done = convsync("--config", str(other), "--profile", "alpha", "service", "install", env=env)
    assert done.returncode == 2
    assert "already runs another config" in done.stdout
    assert drop_in.read_bytes() == before


def test_a_second_config_does_not_replace_the_first_service(tmp_path: Path) -> None:
    """`service install --config work2.yaml` next to an installed convsync.service adds convsync@work2 instead of
    silently replacing the first service."""
    env = no_systemctl(tmp_path)
    first, second = tmp_path / "config.yaml", tmp_path / "work2.yaml"
    for path, tenant in ((first, "one"), (second, "two")):
        path.write_text(f"server:\n  url: https://example.com/tenants/{tenant}/api/v2\nroot: {tmp_path / tenant}\n")
    assert convsync("--config", str(first), "service", "install", env=env).returncode == 0
    plain = unit_dir() / "convsync.service"
    before = plain.read_bytes()
    done = convsync("service", "install", "--config", str(second), env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert plain.read_bytes() == before
    drop_in = (unit_dir() / "convsync@work2.service.d" / "convsync.conf").read_text()
    assert f"CONVSYNC_CONFIG={second}" in drop_in


def test_uninstall_removes_only_that_instance(tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]) -> None:
    """`service uninstall` of profile alpha removes its drop-in; beta's and the template stay."""
    config = two_profiles(tmp_path, *tenants)
    env = no_systemctl(tmp_path)
    for name in ("alpha", "beta"):
        assert convsync("--config", str(config), "--profile", name, "service", "install", env=env).returncode == 0
    done = convsync("--config", str(config), "--profile", "alpha", "service", "uninstall", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert not (unit_dir() / "convsync@alpha.service.d").exists()
    assert (unit_dir() / "convsync@beta.service.d" / "convsync.conf").exists()
    assert (unit_dir() / "convsync@.service").exists()


def test_uninstall_of_another_config_leaves_the_first_service(tmp_path: Path) -> None:
    """`service uninstall --config other.yaml` (never installed) removes nothing: convsync.service runs config.yaml."""
    env = no_systemctl(tmp_path)
    first, other = tmp_path / "config.yaml", tmp_path / "other.yaml"
    for path, tenant in ((first, "one"), (other, "two")):
        path.write_text(f"server:\n  url: https://example.com/tenants/{tenant}/api/v2\nroot: {tmp_path / tenant}\n")
    assert convsync("--config", str(first), "service", "install", env=env).returncode == 0
    plain = unit_dir() / "convsync.service"
    before = plain.read_bytes()
    done = convsync("--config", str(other), "service", "uninstall", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "runs another config" in done.stdout
    assert plain.read_bytes() == before


def test_a_config_whose_path_is_a_prefix_of_the_first_gets_its_own_instance(tmp_path: Path) -> None:
    """`service install --config config.yaml` beside convsync.service of config.yaml.new keeps that unit (a path
    that is the start of the installed one is another config)."""
    env = no_systemctl(tmp_path)
    longer, first = tmp_path / "config.yaml.new", tmp_path / "config.yaml"
    for path, tenant in ((longer, "one"), (first, "two")):
        path.write_text(f"server:\n  url: https://example.com/tenants/{tenant}/api/v2\nroot: {tmp_path / tenant}\n")
    assert convsync("--config", str(longer), "service", "install", env=env).returncode == 0
    plain = unit_dir() / "convsync.service"
    before = plain.read_bytes()
    done = convsync("--config", str(first), "service", "install", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert plain.read_bytes() == before
    assert f"CONVSYNC_CONFIG={first}" in (unit_dir() / "convsync@config.service.d" / "convsync.conf").read_text()


def test_status_of_a_profile_names_its_unit(tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]) -> None:
    """With no daemon, `--profile beta status` says to start convsync@beta, the unit that runs that profile."""
    config = two_profiles(tmp_path, *tenants)
    done = convsync("--config", str(config), "--profile", "beta", "status")
    assert done.returncode == 0, done.stderr
    assert "start it with `systemctl --user start convsync@beta`" in done.stdout


def test_status_of_a_config_installed_as_an_instance_names_that_unit(tmp_path: Path) -> None:
    """A second config installed as convsync@work2: its status says to start convsync@work2, not convsync."""
    env = no_systemctl(tmp_path)
    first, second = tmp_path / "config.yaml", tmp_path / "work2.yaml"
    for path, tenant in ((first, "one"), (second, "two")):
        path.write_text(f"server:\n  url: https://example.com/tenants/{tenant}/api/v2\nroot: {tmp_path / tenant}\n")
        assert convsync("--config", str(path), "service", "install", env=env).returncode == 0
    assert "`systemctl --user start convsync`" in convsync("--config", str(first), "status").stdout
    assert "`systemctl --user start convsync@work2`" in convsync("--config", str(second), "status").stdout


def test_a_unit_copied_by_hand_is_not_replaced_by_another_config(tmp_path: Path) -> None:
    """convsync.service copied from systemd/ (no --config: it runs the default config) stays as it is when another
    config is installed; that config gets its own instance."""
    env = no_systemctl(tmp_path)
    plain = unit_dir() / "convsync.service"
    plain.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "systemd" / "convsync.service", plain)
    before = plain.read_bytes()
    other = tmp_path / "work2.yaml"
    other.write_text(f"server:\n  url: https://example.com/tenants/two/api/v2\nroot: {tmp_path / 'two'}\n")
    done = convsync("--config", str(other), "service", "install", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert plain.read_bytes() == before
    assert (unit_dir() / "convsync@work2.service.d" / "convsync.conf").exists()


def test_a_refused_key_of_a_profile_names_its_unit(
    tmp_path: Path, tenants: tuple[EmulatorServer, EmulatorServer]
) -> None:
    """`run` of profile beta with a wrong key exits 77; the fix names convsync@beta, the unit to restart."""
    config = two_profiles(tmp_path, *tenants)
    done = convsync("--config", str(config), "--profile", "beta", "run", env={"BETA_KEY": "s4w_wrong"}, timeout=60)
    assert done.returncode == 77, done.stderr
    assert "systemctl --user restart convsync@beta)" in done.stderr
