"""Good configs parse to the expected Config; lookup: --config, then $CONVSYNC_CONFIG, then the default."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from convsync.config import AgentSelector, Config, load_config, parse_config

KEY = "s4w_good-config-test-key"
URL = "https://agents.example.com/tenants/t1/api/v2"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    return KEY


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_config_takes_every_default(tmp_path: Path, isolated_home: Path) -> None:
    """Only server.url given: every other field takes its default; the key comes from CONVSYNC_API_KEY."""
    path = write(tmp_path / "c.yaml", f"server:\n  url: {URL}/\n")

    config = load_config(path)

    assert config == Config(
        url=URL,
        api_key=KEY,
        root=isolated_home / "Conversations",
        state_dir=isolated_home / ".local/state/convsync",
        config_file=path,
        api_key_source="environment variable CONVSYNC_API_KEY",
    )


def test_full_config_sets_every_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key of the file lands in its Config field."""
    bundle = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\n")
    path = write(
        tmp_path / "c.yaml",
        f"""
server:
  url: {URL}
  api_key_env: MY_KEY
  verify_tls: false
  ca_bundle: ca.pem
  truststore: true
  timeout_seconds: 12.5
  rate_limit: {{requests: 5, per_seconds: 2, background_share: 0.25}}
root: mirror
agents:
  - name: Sales Assistant
    folder: Sales
  - id: 1B4E28BA-2FA1-11D2-883F-0016D3CCA427
  - name: 2024
poll: {{active_seconds: 0.5, idle_seconds: 30, conversations_seconds: 10, rescan_seconds: 20}}
debounce_ms: 0
on_local_delete: delete_remote
log_level: DEBUG
state_dir: {tmp_path}/state
""",
    )
    monkeypatch.setenv("MY_KEY", "s4w_other\n")

    config = load_config(path)

    assert config == Config(
        url=URL,
        api_key="s4w_other",
        root=tmp_path / "mirror",
        agents=(
            AgentSelector(name="Sales Assistant", folder="Sales"),
            AgentSelector(id="1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
            AgentSelector(name="2024"),
        ),
        verify_tls=False,
        ca_bundle=bundle,
        use_truststore=True,
        timeout_seconds=12.5,
        rate_limit_requests=5,
        rate_limit_window_seconds=2.0,
        rate_limit_background_share=0.25,
        poll_active_seconds=0.5,
        poll_idle_seconds=30.0,
        poll_conversations_seconds=10.0,
        rescan_seconds=20.0,
        debounce_ms=0,
        on_local_delete="delete_remote",
        log_level="debug",
        state_dir=tmp_path / "state",
        config_file=path,
        api_key_source="environment variable MY_KEY",
    )


def test_config_is_frozen(tmp_path: Path) -> None:
    """A Config cannot be changed after loading (reload builds a new one)."""
    config = load_config(write(tmp_path / "c.yaml", f"server:\n  url: {URL}\n"))

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.root = tmp_path  # type: ignore[misc]


def test_example_config_documents_the_defaults(isolated_home: Path) -> None:
    """config.example.yaml parses, and apart from its placeholder URL it equals the defaults."""
    example = load_config(REPO / "config.example.yaml")
    minimal = parse_config(f"server:\n  url: {example.url}\n", source=REPO / "config.example.yaml")

    assert example == minimal


def test_example_config_names_every_key() -> None:
    """Every Config field is explained in config.example.yaml."""
    text = (REPO / "config.example.yaml").read_text()
    keys = [
        "url",
        "api_key_env",
        "api_key_file",
        "api_key_command",
        "verify_tls",
        "ca_bundle",
        "truststore",
        "timeout_seconds",
        "requests",
        "per_seconds",
        "root",
        "agents",
        "folder",
        "active_seconds",
        "idle_seconds",
        "conversations_seconds",
        "rescan_seconds",
        "debounce_ms",
        "on_local_delete",
        "log_level",
        "state_dir",
    ]
    for key in keys:
        assert f"{key}:" in text, key


def test_json_config_is_accepted(tmp_path: Path) -> None:
    """JSON is YAML too: a config written as JSON (as the benchmarks do) loads."""
    path = write(tmp_path / "c.json", json.dumps({"server": {"url": URL}, "root": str(tmp_path / "r")}))

    assert load_config(path).root == tmp_path / "r"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """root and state_dir given relative are taken relative to the folder of the config file, not the cwd."""
    path = write(tmp_path / "etc" / "c.yaml", f"server:\n  url: {URL}\nroot: ../mirror\nstate_dir: st\n")

    config = load_config(path)

    assert config.root == tmp_path / "etc" / ".." / "mirror"
    assert config.state_dir == tmp_path / "etc" / "st"


def test_home_and_variables_are_expanded(tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~ and $VARIABLES in paths are expanded."""
    monkeypatch.setenv("MIRRORS", str(tmp_path / "m"))
    path = write(tmp_path / "c.yaml", f"server:\n  url: {URL}\nroot: $MIRRORS/a\nstate_dir: ~/st\n")

    config = load_config(path)

    assert config.root == tmp_path / "m" / "a"
    assert config.state_dir == isolated_home / "st"


def test_explicit_path_wins_over_environment_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config is used even when $CONVSYNC_CONFIG and the default file exist."""
    explicit = write(tmp_path / "explicit.yaml", f"server:\n  url: {URL}/explicit\n")
    from_env = write(tmp_path / "env.yaml", f"server:\n  url: {URL}/env\n")
    monkeypatch.setenv("CONVSYNC_CONFIG", str(from_env))
    write(Path.home() / ".config/convsync/config.yaml", f"server:\n  url: {URL}/default\n")

    assert load_config(explicit).url == f"{URL}/explicit"


def test_environment_variable_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --config, $CONVSYNC_CONFIG names the file even when the default file exists."""
    from_env = write(tmp_path / "env.yaml", f"server:\n  url: {URL}/env\n")
    monkeypatch.setenv("CONVSYNC_CONFIG", str(from_env))
    write(Path.home() / ".config/convsync/config.yaml", f"server:\n  url: {URL}/default\n")

    assert load_config(None).url == f"{URL}/env"


def test_default_file_is_in_the_user_config_dir(isolated_home: Path) -> None:
    """Without --config and $CONVSYNC_CONFIG, $XDG_CONFIG_HOME/convsync/config.yaml is read."""
    default = write(isolated_home / ".config/convsync/config.yaml", f"server:\n  url: {URL}/default\n")

    config = load_config(None)

    assert config.url == f"{URL}/default"
    assert config.config_file == default
