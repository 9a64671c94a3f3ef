"""The synchronous message route: full history back, auto-rename after the first run, failures."""

from __future__ import annotations

import httpx

from convsync.emulator import EmulatorServer
from tests.emulator.sse import text_of


def test_sync_post_returns_the_whole_history(api: httpx.Client, conv: str) -> None:
    """The answer's ``data`` is every message so far, not just the reply."""
    api.post(f"{conv}/messages", json={"content": "one"})
    body = api.post(f"{conv}/messages", json={"content": "two"}).json()
    assert body["next"] is None and body["has_more"] is False
    assert [m["role"] for m in body["data"]] == ["user", "agent", "user", "agent"]
    assert body["data"] == api.get(f"{conv}/messages").json()["data"]


def test_default_reply_has_a_thought_then_the_echo(api: httpx.Client, conv: str) -> None:
    """The scripted agent thinks first, then says "You said: <prompt>"."""
    agent = api.post(f"{conv}/messages", json={"content": "hello"}).json()["data"][-1]
    assert [p["kind"] for p in agent["content"]] == ["thought", "text"]
    assert agent["content"][0]["thought"] == "Reading the request."
    assert text_of(agent) == "You said: hello"
    assert agent["parent_run_id"] and agent["commited"] is True


def test_missing_content_is_422(api: httpx.Client, conv: str) -> None:
    """A body without ``content`` gives the documented 422 message."""
    response = api.post(f"{conv}/messages", json={"text": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "Request validation failed: body -> content: Field required"


def test_first_sync_message_renames_the_conversation(api: httpx.Client, aid: str, conv: str, cid: str) -> None:
    """After the first sync run the conversation gets a Title Case name from the prompt."""
    api.post(f"{conv}/messages", json={"content": "what is the hottest day in july?"})
    listed = api.get(f"/agents/{aid}/conversations").json()["data"]
    assert next(c for c in listed if c["id"] == cid)["name"] == "What Is The Hottest Day In July"


def test_only_the_first_run_renames(api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str) -> None:
    """A later sync message leaves the name alone."""
    api.post(f"{conv}/messages", json={"content": "first topic"})
    api.post(f"{conv}/messages", json={"content": "second topic"})
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "First Topic"


def test_user_named_conversation_keeps_its_name_when_told_so(
    api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str
) -> None:
    """With ``auto_rename_named=False`` a name given at creation is kept."""
    emu.configure(auto_rename_named=False)
    api.post(f"{conv}/messages", json={"content": "rename me not"})
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "A test conversation"


def test_unnamed_conversation_is_renamed_even_when_named_ones_are_not(
    api: httpx.Client, emu: EmulatorServer, aid: str
) -> None:
    """A conversation created with an empty name is always auto-named."""
    emu.configure(auto_rename_named=False)
    cid = api.post(f"/agents/{aid}/conversations", json={"name": ""}).json()["id"]
    api.post(f"/agents/{aid}/conversations/{cid}/messages", json={"content": "name this"})
    assert next(c for c in emu.conversations(aid) if c["id"] == cid)["name"] == "Name This"


def test_auto_title_is_at_most_80_characters(
    api: httpx.Client, emu: EmulatorServer, aid: str, conv: str, cid: str
) -> None:
    """A long prompt gives a name of at most 80 characters and at most 12 words."""
    api.post(f"{conv}/messages", json={"content": " ".join(["extraordinarily"] * 20)})
    name = next(c for c in emu.conversations(aid) if c["id"] == cid)["name"]
    assert 0 < len(name) <= 80 and len(name.split()) <= 12


def test_failed_run_answers_200_without_an_agent_message(api: httpx.Client, conv: str) -> None:
    """``/fail`` makes the run fail: 200, the user message stored, no agent message."""
    response = api.post(f"{conv}/messages", json={"content": "/fail"})
    assert response.status_code == 200
    assert [m["role"] for m in response.json()["data"]] == ["user"]


def test_unknown_conversation_is_404(api: httpx.Client, aid: str) -> None:
    """Posting to a conversation that does not exist gives 404."""
    response = api.post(f"/agents/{aid}/conversations/{aid}/messages", json={"content": "x"})
    assert response.status_code == 404
