"""Settings that weaken trust are told, not silent: `verify_tls: false` and plain http:// to a host that is not
this machine warn at start (`sync`, `run`), show in `status`, and are `doctor` problems with their fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convsync.cli import Exit
from convsync.config import load_config
from convsync.doctor import run_doctor
from convsync.emulator import EmulatorServer
from convsync.statusreport import print_status
from convsync.trust import is_loopback
from tests.trust.run import KEY, convsync, write_config
from tests.trust.servers import TlsFront

REMOTE_HTTP = "http://example.invalid/tenants/t/api/v2"


def doctor(config: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    lines: list[str] = []
    code = run_doctor(config, say=lines.append)
    return code, "\n".join(lines)


def test_sync_with_verification_off_warns(tls_emulator: TlsFront, tmp_path: Path, isolated_home: Path) -> None:
    """`sync` with `verify_tls: false` still mirrors, but logs a warning naming the key and the trust fixes."""
    config = write_config(tmp_path, tls_emulator.base_url(), "  verify_tls: false\n")

    result = convsync("sync", "--config", str(config), home=isolated_home)

    assert result.returncode == 0, result.stderr
    warning = next((line for line in result.stderr.splitlines() if "WARNING" in line and "verify_tls" in line), "")
    assert "server.ca_bundle" in warning and "server.truststore" in warning, result.stderr


def test_doctor_reports_verification_off_as_a_problem(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctor` with `verify_tls: false`: a trust problem whose fix is ca_bundle or truststore; exit 78."""
    code, out = doctor(write_config(tmp_path, emulator.base_url, "  verify_tls: false\n"), monkeypatch)

    assert code == Exit.CONFIG, out
    assert "PROBLEM  trust: server.verify_tls" in out
    assert "server.ca_bundle" in out.split("PROBLEM  trust: server.verify_tls", 1)[1].split("\n", 2)[1]


def test_status_shows_verification_off(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` (text and --json) carries the verify_tls warning with its fix."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    config = load_config(write_config(tmp_path, emulator.base_url, "  verify_tls: false\n"))

    print_status(config, as_json=False)
    text = capsys.readouterr().out
    print_status(config, as_json=True)
    document = json.loads(capsys.readouterr().out)

    assert "WARNING server.verify_tls" in text and "server.ca_bundle" in text
    assert [w.split(":")[0] for w in document["warnings"]] == ["server.verify_tls"]


def test_doctor_reports_plain_http_to_another_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`doctor` on http:// to a host that is not this machine: a trust problem (the key would travel in clear)."""
    code, out = doctor(write_config(tmp_path, REMOTE_HTTP), monkeypatch)

    assert code == Exit.CONFIG, out
    assert "PROBLEM  trust: server.url: plain http:// to example.invalid" in out
    assert "https://" in out.split("PROBLEM  trust: server.url", 1)[1].split("\n", 2)[1]


def test_sync_warns_about_plain_http_to_another_host(tmp_path: Path, isolated_home: Path) -> None:
    """`sync` on http:// to a host that is not this machine logs the warning before it tries the server."""
    result = convsync("sync", "--config", str(write_config(tmp_path, REMOTE_HTTP)), home=isolated_home)

    assert any("WARNING" in line and "unencrypted" in line for line in result.stderr.splitlines()), result.stderr


def test_doctor_accepts_plain_http_to_this_machine(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http:// to loopback (the emulator, a local gateway) is not a trust problem."""
    code, out = doctor(write_config(tmp_path, emulator.base_url), monkeypatch)

    assert code == 0, out
    assert "ok       trust:" in out


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("api.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("10.0.0.5", False),
        ("::ffff:8.8.8.8", False),
        ("example.invalid", False),
        ("localhost.example.com", False),
    ],
)
def test_what_counts_as_this_machine(host: str, loopback: bool) -> None:
    """localhost, *.localhost and loopback addresses count as this machine; other names and addresses don't."""
    assert is_loopback(host) is loopback
