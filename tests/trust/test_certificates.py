"""Certificates: a real TLS server on loopback (the emulator behind a TLS front) with certificates made here.
One that cannot be trusted stops `sync` and `run` with exit 76 before any request (the key never leaves), and
the message names the config keys that fix it; `ca_bundle` and `truststore` make the test CA trusted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trustme

from convsync.cli import Exit
from convsync.doctor import run_doctor
from convsync.emulator import EmulatorServer
from tests.trust.conftest import server_context
from tests.trust.run import KEY, convsync, write_config
from tests.trust.servers import TlsFront


def sync(
    tmp_path: Path, home: Path, url: str, extra: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return convsync("sync", "--config", str(write_config(tmp_path, url, extra)), home=home, env=env)


def in_order(text: str, *words: str) -> bool:
    """Every word occurs in ``text``, each first occurring after the one before."""
    positions = [text.find(w) for w in words]
    return -1 not in positions and positions == sorted(positions)


def test_sync_refuses_a_certificate_from_an_unknown_ca_before_any_request(
    tls_emulator: TlsFront, emulator: EmulatorServer, tmp_path: Path, isolated_home: Path
) -> None:
    """An unknown CA: `sync` exits 76 and the server never sees a request (so never the key)."""
    result = sync(tmp_path, isolated_home, tls_emulator.base_url())

    assert result.returncode == Exit.TLS_UNTRUSTED, result.stderr
    assert emulator.requests == [] and tls_emulator.connections == 0
    assert KEY not in result.stderr


def test_the_untrusted_certificate_fix_names_config_keys_trust_first(
    tls_emulator: TlsFront, tmp_path: Path, isolated_home: Path
) -> None:
    """The fix speaks config: server.ca_bundle, then server.truststore, server.verify_tls last (no Python)."""
    result = sync(tmp_path, isolated_home, tls_emulator.base_url())

    assert in_order(result.stderr, "server.ca_bundle", "server.truststore", "server.verify_tls"), result.stderr
    assert "verify=" not in result.stderr and "use_truststore" not in result.stderr


def test_run_exits_76_at_start_on_an_untrusted_certificate(
    tls_emulator: TlsFront, tmp_path: Path, isolated_home: Path
) -> None:
    """`convsync run` (the unit's command) stops with 76, which the unit does not restart on, not 75."""
    config = write_config(tmp_path, tls_emulator.base_url())

    result = convsync("run", "--config", str(config), home=isolated_home, timeout=60)

    assert result.returncode == Exit.TLS_UNTRUSTED, result.stderr
    assert "server.ca_bundle" in result.stderr


def test_a_certificate_for_another_host_is_refused_and_names_server_url(
    ca: trustme.CA, emulator: EmulatorServer, ca_file: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """A certificate from a trusted CA but for another host name: exit 76, the fix points at server.url."""
    context = server_context(ca, "api.other.example")
    with TlsFront(context, emulator.port, "/tenants/demo/api/v2") as front:
        result = sync(tmp_path, isolated_home, front.base_url(), f"  ca_bundle: {ca_file}\n")

    assert result.returncode == Exit.TLS_UNTRUSTED, result.stderr
    assert emulator.requests == []
    assert "server.url" in result.stderr and "host name" in result.stderr


def test_an_expired_certificate_is_refused_and_says_so(
    ca: trustme.CA, emulator: EmulatorServer, ca_file: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """An expired certificate from a trusted CA: exit 76, the message says it is outside its validity period."""
    context = server_context(ca, "127.0.0.1", expired=True)
    with TlsFront(context, emulator.port, "/tenants/demo/api/v2") as front:
        result = sync(tmp_path, isolated_home, front.base_url(), f"  ca_bundle: {ca_file}\n")

    assert result.returncode == Exit.TLS_UNTRUSTED, result.stderr
    assert emulator.requests == []
    assert "validity period" in result.stderr


def test_ca_bundle_trusts_the_test_ca(
    tls_emulator: TlsFront, emulator: EmulatorServer, ca_file: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """server.ca_bundle naming the CA's PEM file: `sync` mirrors over TLS and exits 0."""
    result = sync(tmp_path, isolated_home, tls_emulator.base_url(), f"  ca_bundle: {ca_file}\n")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "root" / "Demo Agent").is_dir()
    assert emulator.requests


def test_truststore_uses_the_system_store_where_the_test_ca_is(
    tls_emulator: TlsFront, ca_file: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """server.truststore: true trusts what the OS store trusts; on Linux that store is OpenSSL's, which
    SSL_CERT_FILE points at the test CA here. The same config without it is refused."""
    url = tls_emulator.base_url()

    trusted = sync(tmp_path, isolated_home, url, "  truststore: true\n", env={"SSL_CERT_FILE": str(ca_file)})
    refused = sync(tmp_path, isolated_home, url, "  truststore: true\n")

    assert trusted.returncode == 0, trusted.stderr
    assert refused.returncode == Exit.TLS_UNTRUSTED, refused.stderr


def test_doctor_reports_an_untrusted_certificate_with_the_trust_fix_first(
    tls_emulator: TlsFront, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctor` on an unknown CA: a server problem, exit 76, its fix naming ca_bundle before verify_tls."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    lines: list[str] = []

    code = run_doctor(write_config(tmp_path, tls_emulator.base_url()), say=lines.append)

    out = "\n".join(lines)
    assert code == Exit.TLS_UNTRUSTED, out
    fix = next(line for line in lines if "fix:" in line and "server.ca_bundle" in line)
    assert in_order(fix, "server.ca_bundle", "server.truststore", "server.verify_tls"), out
