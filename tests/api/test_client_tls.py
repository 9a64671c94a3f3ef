"""TLS verification of AgentClient against a real HTTPS server on loopback with a self-signed certificate."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.api.client import AgentClient
from convsync.errors import TransientError

KEY = "s4w_tls-test-key"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"next": None, "has_more": False, "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed certificate; yields (base URL, cert path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/tenants/demo/api/v2", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_unknown_certificate_fails_once_with_a_fix(https_server: tuple[str, Path]) -> None:
    """A certificate nobody trusts raises TransientError naming the TLS fix, without retrying."""
    base, _ = https_server
    slept: list[float] = []
    client = AgentClient(base, KEY, rate_limit=None, sleep=slept.append)
    with client, pytest.raises(TransientError, match="TLS certificate verification failed") as info:
        client.list_agents()
    assert slept == [] and KEY not in str(info.value)


def test_ca_bundle_path_is_trusted(https_server: tuple[str, Path]) -> None:
    """verify=<CA bundle path> trusts the server's certificate."""
    base, cert = https_server
    with AgentClient(base, KEY, verify=str(cert), rate_limit=None) as client:
        assert client.list_agents() == []


def test_truststore_with_an_extra_ca_is_trusted(https_server: tuple[str, Path]) -> None:
    """use_truststore=True builds an OS-trust-store context, to which a CA path in verify is added."""
    base, cert = https_server
    with AgentClient(base, KEY, verify=str(cert), use_truststore=True, rate_limit=None) as client:
        assert client.list_agents() == []


def test_verify_false_skips_verification(https_server: tuple[str, Path]) -> None:
    """verify=False accepts any certificate (for lab setups only)."""
    base, _ = https_server
    with AgentClient(base, KEY, verify=False, rate_limit=None) as client:
        assert client.list_agents() == []
