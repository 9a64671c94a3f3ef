"""Certificates made in the test (trustme) and the loopback servers that present them."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme

from convsync.emulator import EmulatorOptions, EmulatorServer
from tests.trust.run import KEY
from tests.trust.servers import ScriptedServer, TlsFront


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A CA nobody trusts unless told to (not in certifi's bundle nor in the system store)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str, expired: bool = False) -> ssl.SSLContext:
    """A server-side context with a certificate from ``ca`` for ``names`` (expired a day ago if asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if expired:
        now = datetime.datetime.now(datetime.UTC)
        leaf = ca.issue_cert(
            *names, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
        )
    else:
        leaf = ca.issue_cert(*names)
    leaf.configure_cert(context)
    return context


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY, chunk_delay=0.0)) as emu:
        yield emu


@pytest.fixture
def tls_emulator(ca: trustme.CA, emulator: EmulatorServer) -> Iterator[TlsFront]:
    """The emulator behind TLS with a certificate from ``ca`` for 127.0.0.1 and localhost."""
    context = server_context(ca, "127.0.0.1", "localhost")
    with TlsFront(context, emulator.port, urlsplit(emulator.base_url).path) as front:
        yield front


@pytest.fixture
def elsewhere(ca: trustme.CA) -> Iterator[ScriptedServer]:
    """A second HTTPS listener (another origin: another port) that answers anything with an empty list."""
    with ScriptedServer(tls=server_context(ca, "127.0.0.1")) as server:
        yield server


@pytest.fixture
def plain_elsewhere() -> Iterator[ScriptedServer]:
    """A plain-HTTP listener on loopback (the target of an https → http downgrade)."""
    with ScriptedServer() as server:
        yield server
