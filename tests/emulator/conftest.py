"""Fixtures of the emulator tests: one shared emulator on loopback, reset after each test; raw clients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import httpx
import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.emulator.admin import RUNTIME_OPTIONS

DEMO = "Demo Agent"


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions()) as emulator:
        yield emulator


@pytest.fixture
def emu(shared_emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The shared emulator, put back to its start-up options, faults and logs after the test."""
    yield shared_emulator
    defaults = EmulatorOptions()
    shared_emulator.clear_faults()
    shared_emulator.configure(
        **{f.name: getattr(defaults, f.name) for f in fields(defaults) if f.name in RUNTIME_OPTIONS}
    )
    shared_emulator.clear_requests()
    shared_emulator.clear_stream_log()


@pytest.fixture
def fresh() -> Iterator[EmulatorServer]:
    """An emulator of the test's own, for tests that restart it or need a pristine state."""
    with EmulatorServer(EmulatorOptions()) as emulator:
        yield emulator


def client_for(emulator: EmulatorServer, **kwargs: object) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=20,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def api(emu: EmulatorServer) -> Iterator[httpx.Client]:
    with client_for(emu) as client:
        yield client


@pytest.fixture
def aid(emu: EmulatorServer) -> str:
    return emu.agent_id(DEMO)


@pytest.fixture
def cid(api: httpx.Client, aid: str) -> str:
    response = api.post(f"/agents/{aid}/conversations", json={"name": "A test conversation"})
    response.raise_for_status()
    return str(response.json()["id"])


@pytest.fixture
def conv(aid: str, cid: str) -> str:
    """The path of the test's conversation below the base URL."""
    return f"/agents/{aid}/conversations/{cid}"
