"""The gateway's bearer auth: 401 envelopes without ``error_id``, with the gateway's messages."""

from __future__ import annotations

import httpx
import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer


def unauthorized(emu: EmulatorServer, headers: dict[str, str]) -> str:
    response = httpx.get(f"{emu.base_url}/agents", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body == {"error": {"code": "unauthorized", "message": body["error"]["message"]}}
    return str(body["error"]["message"])


def test_missing_header(emu: EmulatorServer) -> None:
    """No Authorization header: "Missing Authorization header"."""
    assert unauthorized(emu, {}) == "Missing Authorization header"


def test_not_a_bearer_token(emu: EmulatorServer) -> None:
    """A non-Bearer scheme: "Invalid Authorization header: Expected Bearer token"."""
    assert unauthorized(emu, {"Authorization": "Basic abc"}) == "Invalid Authorization header: Expected Bearer token"


def test_key_without_the_s4w_prefix(emu: EmulatorServer) -> None:
    """A key not starting with ``s4w_`` gets the key-format message."""
    message = unauthorized(emu, {"Authorization": "Bearer sk-123"})
    assert message == 'Invalid API key format: Expected key starting with "s4w_"'


def test_wrong_key(emu: EmulatorServer) -> None:
    """A well-formed but wrong key: "Invalid API key"."""
    assert unauthorized(emu, {"Authorization": "Bearer s4w_wrong"}) == "Invalid API key"


def test_any_s4w_key_when_none_is_configured(emu: EmulatorServer) -> None:
    """With ``api_key=None`` every ``s4w_`` key is accepted."""
    emu.configure(api_key=None)
    assert httpx.get(f"{emu.base_url}/agents", headers={"Authorization": "Bearer s4w_whatever"}).status_code == 200


def test_auth_comes_before_routing(emu: EmulatorServer) -> None:
    """An unknown route under the API prefix still answers 401 first."""
    assert httpx.get(f"{emu.base_url}/no/such/route").status_code == 401


def test_options_reject_a_key_the_gateway_would_never_accept() -> None:
    """A configured key must start with ``s4w_``."""
    with pytest.raises(ValueError, match="s4w_"):
        EmulatorOptions(api_key="secret")
