"""The API key: its sources, the systemd credential's precedence, and that its value never shows."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from convsync.config import load_config
from convsync.errors import ConfigError
from convsync.logs import RedactingFilter

URL = "http://127.0.0.1:9/api/v2"
ENV_KEY = "s4w_from-the-environment-0001"
FILE_KEY = "s4w_from-a-file-0002"
CREDENTIAL_KEY = "s4w_from-the-credential-0003"


def config_with(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  url: {URL}\n{source}")
    return path


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_key_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key_env names the variable the key is read from (surrounding whitespace dropped)."""
    monkeypatch.setenv("SEMA4_KEY", f"  {ENV_KEY}\n")

    config = load_config(config_with(tmp_path, "  api_key_env: SEMA4_KEY\n"))

    assert config.api_key == ENV_KEY
    assert config.api_key_source == "environment variable SEMA4_KEY"


def test_key_from_private_file_is_its_first_line(tmp_path: Path) -> None:
    """api_key_file: a 0600 file; the key is its first non-empty line."""
    key = private_file(tmp_path / "key", f"\n{FILE_KEY}\nsome note\n")

    config = load_config(config_with(tmp_path, f"  api_key_file: {key}\n"))

    assert config.api_key == FILE_KEY
    assert config.api_key_source == f"file {key}"


def test_key_from_command(tmp_path: Path) -> None:
    """api_key_command runs without a shell; the first line it prints is the key."""
    script = tmp_path / "print-key"
    script.write_text(f"import sys\nprint({FILE_KEY!r})\nprint('login: me')\n")

    config = load_config(config_with(tmp_path, f"  api_key_command: {sys.executable} {script}\n"))

    assert config.api_key == FILE_KEY


def test_credential_wins_over_configured_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CREDENTIALS_DIRECTORY/convsync-api-key (LoadCredential=) is used before the configured source."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    private_file(credentials / "convsync-api-key", CREDENTIAL_KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("CONVSYNC_API_KEY", ENV_KEY)

    config = load_config(config_with(tmp_path, "  api_key_env: CONVSYNC_API_KEY\n"))

    assert config.api_key == CREDENTIAL_KEY
    assert config.api_key_source == "systemd credential convsync-api-key"


def test_credentials_directory_without_our_credential_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credentials directory that lacks convsync-api-key leaves the configured source in charge."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("CONVSYNC_API_KEY", ENV_KEY)

    assert load_config(config_with(tmp_path, "")).api_key == ENV_KEY


def test_credential_makes_an_unset_variable_irrelevant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the credential present, an unset key variable is no problem (a service has no shell env)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    private_file(credentials / "convsync-api-key", CREDENTIAL_KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    assert load_config(config_with(tmp_path, "  api_key_env: NOT_SET_ANYWHERE\n")).api_key == CREDENTIAL_KEY


def test_key_is_not_in_the_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """repr() and str() of a Config leave the key out."""
    monkeypatch.setenv("CONVSYNC_API_KEY", ENV_KEY)

    config = load_config(config_with(tmp_path, ""))

    assert ENV_KEY not in repr(config)
    assert ENV_KEY not in str(config)


def test_key_with_inner_spaces_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A key file whose first line holds spaces is refused, and the message does not quote the file."""
    key = private_file(tmp_path / "key", "s4w_half and-half-of-it\n")

    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, f"  api_key_file: {key}\n"))

    message = "\n".join(caught.value.problems)
    assert "contains spaces or control characters" in message
    assert "half" not in message


def test_failing_command_output_is_redacted(tmp_path: Path) -> None:
    """When the key command fails, a key-looking string in its stderr is redacted from the message."""
    script = tmp_path / "leaky"
    script.write_text("import sys\nsys.stderr.write('token s4w_leaked-by-stderr rejected\\n')\nsys.exit(2)\n")

    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, f"  api_key_command: [{sys.executable}, {script}]\n"))

    (problem,) = caught.value.problems
    assert "exit status 2" in problem
    assert "s4w_leaked" not in problem


def test_loaded_key_is_redacted_from_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once loaded, the key is registered for redaction: a log record quoting it shows [redacted]."""
    odd_key = "opaque-key-without-prefix-7781"
    monkeypatch.setenv("CONVSYNC_API_KEY", odd_key)
    load_config(config_with(tmp_path, ""))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "sending %s", (odd_key,), None)

    RedactingFilter().filter(record)

    assert record.getMessage() == "sending [redacted]"
