"""AgentClient against emulator switches for what the real v2.5 server may plausibly send (spec's UNKNOWNs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from convsync.api.client import AgentClient
from convsync.emulator import EmulatorOptions, EmulatorServer

KEY = "s4w_test-key"


@pytest.fixture
def nulls() -> Iterator[EmulatorServer]:
    """An emulator that sends every empty collection as ``null``."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, null_collections=True)) as emu:
        yield emu


def client_of(emu: EmulatorServer) -> AgentClient:
    return AgentClient(emu.base_url, KEY, rate_limit=None)


# --- null collections and DELETE answers --------------------------------------------------------------------


def test_null_data_is_an_empty_list(nulls: EmulatorServer) -> None:
    """A page whose ``data`` is null lists nothing (conversations and messages), without an error."""
    aid = nulls.agent_id("Demo Agent")
    with client_of(nulls) as client:
        assert client.list_conversations(aid) == []
        cid = nulls.create_conversation(aid, "empty")
        assert client.get_messages(aid, cid) == []


def test_null_content_is_a_message_without_parts(nulls: EmulatorServer) -> None:
    """A message whose ``content`` is null is a message with no parts."""
    aid = nulls.agent_id("Demo Agent")
    cid = nulls.create_conversation(aid, "c")
    nulls.inject_message(cid, "", no_content=True)
    with client_of(nulls) as client:
        (message,) = client.get_messages(aid, cid)
    assert message.content == ()


def test_null_files_and_frames_bodies_are_empty_lists(nulls: EmulatorServer) -> None:
    """A ``null`` files or data-frames body lists nothing."""
    aid = nulls.agent_id("Demo Agent")
    cid = nulls.create_conversation(aid, "c")
    with client_of(nulls) as client:
        assert client.list_files(aid, cid) == []
        assert client.list_data_frames(aid, cid) == []


def test_delete_answered_204_is_success() -> None:
    """A DELETE answered ``204 No Content`` reports the conversation deleted and it is gone."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, delete_no_content=True)) as emu:
        aid = emu.agent_id("Demo Agent")
        cid = emu.create_conversation(aid, "to delete")
        with client_of(emu) as client:
            gone = client.delete_conversation(aid, cid)
            assert (gone.id, gone.agent_id) == (cid, aid)
            assert [c.id for c in client.list_conversations(aid)] == []
        assert [r.status for r in emu.requests if r.method == "DELETE"] == [204]


# --- next links in any form ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["internal-url", "internal-path", "other-scheme"])
def test_next_in_any_form_is_followed_on_the_configured_origin(form: str) -> None:
    """A next naming another host, the server's own prefix or another scheme still pages through the list."""
    with EmulatorServer(EmulatorOptions(api_key=KEY, page_size=2, next_form=form)) as emu:  # type: ignore[arg-type]
        aid = emu.agent_id("Demo Agent")
        made = [emu.create_conversation(aid, f"c{i}") for i in range(5)]
        with client_of(emu) as client:
            listed = [c.id for c in client.list_conversations(aid)]
        pages = [r for r in emu.requests if r.route == "list_conversations"]
    assert listed == list(reversed(made))
    assert [r.status for r in pages] == [200, 200, 200]
    assert all(r.path == f"/tenants/{emu.options.tenant}/api/v2/agents/{aid}/conversations" for r in pages)
