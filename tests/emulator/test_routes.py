"""Agents, conversations and messages routes: shapes, order, prefixes, slashes and the error envelope."""

from __future__ import annotations

import re
import uuid

import httpx

from convsync.emulator import EmulatorServer
from tests.emulator.conftest import DEMO

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def assert_envelope(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"error_id", "code", "message"}
    uuid.UUID(body["error"]["error_id"])
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def test_list_agents_is_a_paginated_response_with_the_demo_agent(api: httpx.Client) -> None:
    """GET /agents answers ``{"next": null, "has_more": false, "data": [...]}`` holding the seeded agent."""
    body = api.get("/agents").json()
    assert list(body) == ["next", "has_more", "data"]
    assert body["next"] is None and body["has_more"] is False
    demo = next(a for a in body["data"] if a["name"] == DEMO)
    assert {"id", "name", "description", "mode"} <= set(demo)
    assert demo["mode"] == "conversational"


def test_json_bodies_are_compact(api: httpx.Client) -> None:
    """REST bodies are compact JSON like orjson writes (no spaces after separators)."""
    raw = api.get("/agents").text
    assert raw.startswith('{"next":null,"has_more":false,"data":[{"id":"')
    assert ", " not in raw.split('"description"')[0]


def test_agent_name_filter_is_a_case_insensitive_prefix(api: httpx.Client, emu: EmulatorServer) -> None:
    """``name`` keeps only agents whose name starts with it, ignoring case."""
    emu.add_agent("Zebra Filter Probe")
    names = [a["name"] for a in api.get("/agents", params={"name": "zebra f"}).json()["data"]]
    assert names == ["Zebra Filter Probe"]


def test_hidden_agents_are_not_listed(api: httpx.Client, emu: EmulatorServer) -> None:
    """An agent marked hidden is filtered out of the list and not found by id."""
    hidden = emu.add_agent("Hidden Probe", hidden=True)
    assert all(a["id"] != hidden for a in api.get("/agents").json()["data"])
    assert api.get(f"/agents/{hidden}").status_code == 404


def test_get_agent_by_id(api: httpx.Client, aid: str) -> None:
    """GET /agents/{aid} returns the agent object."""
    body = api.get(f"/agents/{aid}").json()
    assert body["id"] == aid and body["name"] == DEMO


def test_unknown_agent_is_404_envelope(api: httpx.Client) -> None:
    """An unknown agent id gives 404 ``not_found`` naming the agent."""
    missing = str(uuid.uuid4())
    message = assert_envelope(api.get(f"/agents/{missing}"), 404, "not_found")
    assert message == f"Agent {missing} not found"


def test_non_uuid_id_is_400_invalid_uuid(api: httpx.Client) -> None:
    """A malformed agent id gives 400 ``bad_request`` "Invalid UUID: …"."""
    message = assert_envelope(api.get("/agents/not-a-uuid/conversations"), 400, "bad_request")
    assert message == "Invalid UUID: not-a-uuid"


def test_non_uuid_conversation_id_is_400(api: httpx.Client, aid: str) -> None:
    """A malformed conversation id gives 400 too."""
    assert_envelope(api.get(f"/agents/{aid}/conversations/nope/messages"), 400, "bad_request")


def test_create_conversation_answers_200_with_the_conversation(api: httpx.Client, aid: str) -> None:
    """POST conversations answers 200 (not 201) with exactly id, name and agent_id."""
    response = api.post(f"/agents/{aid}/conversations", json={"name": "Q3 reconciliation"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "name", "agent_id"]
    assert body["name"] == "Q3 reconciliation" and body["agent_id"] == aid
    assert uuid.UUID(body["id"]).version == 4


def test_create_conversation_without_name_is_422_with_the_server_message(api: httpx.Client, aid: str) -> None:
    """A body without ``name`` gives 422 "Request validation failed: body -> name: Field required"."""
    message = assert_envelope(api.post(f"/agents/{aid}/conversations", json={}), 422, "unprocessable_entity")
    assert message == "Request validation failed: body -> name: Field required"


def test_conversations_are_listed_newest_first(api: httpx.Client, aid: str) -> None:
    """The conversation list is ordered newest first."""
    ids = [api.post(f"/agents/{aid}/conversations", json={"name": f"order {i}"}).json()["id"] for i in range(3)]
    listed = [c["id"] for c in api.get(f"/agents/{aid}/conversations").json()["data"]]
    assert [i for i in listed if i in ids] == list(reversed(ids))


def test_conversation_limit_is_a_plain_slice(api: httpx.Client, aid: str) -> None:
    """``limit`` cuts the newest-first list like ``threads[:limit]``."""
    for i in range(3):
        api.post(f"/agents/{aid}/conversations", json={"name": f"limit {i}"})
    everything = api.get(f"/agents/{aid}/conversations").json()["data"]
    assert api.get(f"/agents/{aid}/conversations", params={"limit": 2}).json()["data"] == everything[:2]
    assert api.get(f"/agents/{aid}/conversations", params={"limit": -1}).json()["data"] == everything[:-1]


def test_delete_returns_the_conversation_and_a_second_delete_is_404(api: httpx.Client, conv: str, cid: str) -> None:
    """DELETE answers the deleted conversation; deleting it again is 404."""
    first = api.delete(conv)
    assert first.status_code == 200 and first.json()["id"] == cid
    assert_envelope(api.delete(conv), 404, "not_found")


def test_deleted_conversation_leaves_the_list(api: httpx.Client, aid: str, conv: str, cid: str) -> None:
    """A deleted conversation is no longer listed and its messages are 404."""
    api.delete(conv)
    assert all(c["id"] != cid for c in api.get(f"/agents/{aid}/conversations").json()["data"])
    assert api.get(f"{conv}/messages").status_code == 404


def test_messages_of_a_new_conversation_are_empty(api: httpx.Client, conv: str) -> None:
    """A fresh conversation has an empty paginated message list."""
    assert api.get(f"{conv}/messages").json() == {"next": None, "has_more": False, "data": []}


def test_messages_are_oldest_first_with_z_timestamps(api: httpx.Client, conv: str) -> None:
    """Messages come oldest first; REST timestamps end in ``Z`` with microseconds."""
    api.post(f"{conv}/messages", json={"content": "first"})
    api.post(f"{conv}/messages", json={"content": "second"})
    data = api.get(f"{conv}/messages").json()["data"]
    assert [m["role"] for m in data] == ["user", "agent", "user", "agent"]
    assert data[0]["content"][0]["text"] == "first"
    assert all(Z_TIME.match(m["created_at"]) and Z_TIME.match(m["updated_at"]) for m in data)


def test_stored_message_has_the_captured_keys(api: httpx.Client, conv: str) -> None:
    """A stored message carries the captured key set, including the misspelt ``commited``."""
    api.post(f"{conv}/messages", json={"content": "keys"})
    user = api.get(f"{conv}/messages").json()["data"][0]
    assert list(user) == [
        "content",
        "role",
        "complete",
        "commited",
        "created_at",
        "updated_at",
        "agent_metadata",
        "server_metadata",
        "parent_run_id",
        "message_id",
    ]
    assert user["content"][0]["kind"] == "text" and user["content"][0]["citations"] == []


def test_trailing_slash_is_accepted(api: httpx.Client, aid: str) -> None:
    """Routes answer with and without a trailing slash (no redirect)."""
    assert api.get("/agents/").status_code == 200
    assert api.get(f"/agents/{aid}/conversations/").json()["has_more"] is False


def test_other_prefixes_serve_the_same_routes(emu: EmulatorServer) -> None:
    """``/api/v2``, ``/api/v1`` and ``/tenants/{tid}/api/v1`` serve the same handlers."""
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    for prefix in ("/api/v2", "/api/v1", "/tenants/other/api/v1"):
        response = httpx.get(f"{emu.origin}{prefix}/agents", headers=headers)
        assert response.status_code == 200, prefix
        assert any(a["name"] == DEMO for a in response.json()["data"])


def test_unknown_route_is_404_envelope(api: httpx.Client) -> None:
    """An unknown path under the API gives the envelope, not FastAPI's ``detail``."""
    assert_envelope(api.get("/no/such/route"), 404, "not_found")


def test_path_outside_the_api_is_404_envelope(emu: EmulatorServer) -> None:
    """A path outside every prefix gives the 404 envelope without asking for a key."""
    assert_envelope(httpx.get(f"{emu.origin}/favicon.ico"), 404, "not_found")


def test_wrong_method_is_405_envelope(api: httpx.Client) -> None:
    """A known path with the wrong method gives 405 ``method_not_allowed``."""
    assert_envelope(api.put("/agents"), 405, "method_not_allowed")


def test_non_integer_limit_is_422(api: httpx.Client, aid: str) -> None:
    """A query parameter of the wrong type gives 422 in the server's message format."""
    message = assert_envelope(
        api.get(f"/agents/{aid}/conversations", params={"limit": "many"}), 422, "unprocessable_entity"
    )
    assert message.startswith("Request validation failed: query -> limit: ")
