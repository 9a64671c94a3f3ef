"""The switches for what the spec leaves UNKNOWN: real pagination and the gateway's rate limit."""

from __future__ import annotations

import httpx
import pytest

from convsync.emulator import EmulatorServer
from tests.waiting import wait_until


@pytest.fixture
def five(api: httpx.Client, aid: str) -> list[str]:
    """Five fresh conversations (newest first) on top of whatever the agent had."""
    ids = [api.post(f"/agents/{aid}/conversations", json={"name": f"page {i}"}).json()["id"] for i in range(5)]
    return list(reversed(ids))


def test_pagination_is_off_by_default(api: httpx.Client, aid: str, five: list[str]) -> None:
    """By default every list comes whole with ``next: null``."""
    body = api.get(f"/agents/{aid}/conversations").json()
    assert body["next"] is None and body["has_more"] is False and len(body["data"]) >= 5


def test_token_pages_follow_with_the_next_parameter(
    api: httpx.Client, emu: EmulatorServer, aid: str, five: list[str]
) -> None:
    """With ``page_size`` set, ``next`` is an opaque token passed back as ``?next=``."""
    emu.configure(page_size=2)
    seen: list[str] = []
    params: dict[str, str] = {}
    while True:
        body = api.get(f"/agents/{aid}/conversations", params=params).json()
        assert len(body["data"]) <= 2
        seen += [c["id"] for c in body["data"]]
        if not body["has_more"]:
            assert body["next"] is None
            break
        assert not body["next"].startswith(("http", "/"))
        params = {"next": body["next"]}
    assert seen[:5] == five and len(seen) == len(set(seen))


def test_url_form_next_is_a_followable_url(api: httpx.Client, emu: EmulatorServer, aid: str, five: list[str]) -> None:
    """With ``next_form="url"`` the next page is a full URL that keeps the other parameters."""
    emu.configure(page_size=2, next_form="url")
    first = api.get(f"/agents/{aid}/conversations", params={"limit": 4}).json()
    assert first["next"].startswith(emu.base_url) and "limit=4" in first["next"]
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json() if second["has_more"] else {"data": [], "has_more": False}
    assert [c["id"] for c in first["data"] + second["data"] + third["data"]] == five[:4]
    assert third["has_more"] is False


def test_path_form_next_is_relative_to_the_host(
    api: httpx.Client, emu: EmulatorServer, aid: str, five: list[str]
) -> None:
    """With ``next_form="path"`` the next page is an absolute path on the same host."""
    emu.configure(page_size=3, next_form="path")
    first = api.get(f"/agents/{aid}/conversations").json()
    assert first["next"].startswith("/tenants/")
    second = httpx.get(emu.origin + first["next"], headers=api.headers).json()
    assert [c["id"] for c in second["data"]][:2] == five[3:5]


def test_messages_page_too(api: httpx.Client, emu: EmulatorServer, conv: str) -> None:
    """Message lists page oldest first across pages."""
    api.post(f"{conv}/messages", json={"content": "one"})
    api.post(f"{conv}/messages", json={"content": "two"})
    emu.configure(page_size=3)
    first = api.get(f"{conv}/messages").json()
    second = api.get(f"{conv}/messages", params={"next": first["next"]}).json()
    assert [m["role"] for m in first["data"] + second["data"]] == ["user", "agent", "user", "agent"]


def test_bad_token_is_400(api: httpx.Client, emu: EmulatorServer, aid: str) -> None:
    """A token the emulator did not issue gives 400 ``bad_request``."""
    emu.configure(page_size=2)
    response = api.get(f"/agents/{aid}/conversations", params={"next": "garbage!"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_rate_limit_answers_429_with_retry_after(api: httpx.Client, emu: EmulatorServer) -> None:
    """Past N requests in the window the gateway answers 429 with its envelope and ``Retry-After``."""
    emu.configure(rate_limit=3, rate_window=30.0)
    statuses = [api.get("/agents").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = api.get("/agents")
    assert limited.json() == {
        "error": {"code": "rate_limit_exceeded", "message": "Too many requests, please try again later"}
    }
    assert 1 <= int(limited.headers["retry-after"]) <= 30


def test_rate_limit_headers_count_down(api: httpx.Client, emu: EmulatorServer) -> None:
    """Responses carry draft-8 ``RateLimit-Policy`` and ``RateLimit`` headers while the limit is on."""
    emu.configure(rate_limit=5, rate_window=10.0)
    response = api.get("/agents")
    assert response.headers["ratelimit-policy"] == '"5-in-10sec"; q=5; w=10'
    assert response.headers["ratelimit"].startswith('"5-in-10sec"; r=4; t=')


def test_rate_limit_window_resets(api: httpx.Client, emu: EmulatorServer) -> None:
    """After the window passes requests are allowed again."""
    emu.configure(rate_limit=1, rate_window=0.3)
    api.get("/agents")
    assert api.get("/agents").status_code == 429
    wait_until(lambda: api.get("/agents").status_code == 200, timeout=5, what="the window to reset")


def test_admin_api_is_not_rate_limited(emu: EmulatorServer, api: httpx.Client) -> None:
    """The admin routes neither count nor get limited."""
    emu.configure(rate_limit=1, rate_window=30.0)
    for _ in range(3):
        assert httpx.get(f"{emu.admin_url}/health").status_code == 200
    assert api.get("/agents").status_code == 200


def _listed(api: httpx.Client, aid: str, cid: str) -> dict[str, object]:
    return next(c for c in api.get(f"/agents/{aid}/conversations").json()["data"] if c["id"] == cid)


def test_the_list_has_no_updated_at_by_default(api: httpx.Client, aid: str, five: list[str]) -> None:
    """Without ``list_updated_at`` a listed conversation has exactly the public keys (spec 2.2)."""
    assert set(_listed(api, aid, five[0])) == {"id", "name", "agent_id"}


def test_updated_at_moves_with_a_message_added_elsewhere(
    api: httpx.Client, emu: EmulatorServer, aid: str, five: list[str]
) -> None:
    """With ``list_updated_at="on"`` the list's ``updated_at`` becomes the time of a message injected later."""
    emu.configure(list_updated_at="on")
    before = _listed(api, aid, five[0])["updated_at"]
    message = emu.inject_message(five[0], "from elsewhere")
    after = _listed(api, aid, five[0])["updated_at"]
    assert isinstance(before, str) and before.endswith("Z")
    assert after != before and after == message["created_at"]


def test_a_stale_updated_at_stays_at_the_creation_time(
    api: httpx.Client, emu: EmulatorServer, aid: str, five: list[str]
) -> None:
    """With ``list_updated_at="stale"`` the list's ``updated_at`` does not move when a message is added."""
    emu.configure(list_updated_at="stale")
    before = _listed(api, aid, five[0])["updated_at"]
    emu.inject_message(five[0], "from elsewhere")
    assert isinstance(before, str) and _listed(api, aid, five[0])["updated_at"] == before
