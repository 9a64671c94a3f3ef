"""Redirects: a request goes only to the origin of server.url. Another origin (an https → http downgrade too)
is refused before anything is sent there, for GET and POST; a redirect never re-sends a body; a GET's redirect
within the origin is followed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from convsync.api.client import AgentClient
from convsync.cli import Exit
from convsync.errors import RedirectRefused
from tests.trust.conftest import server_context
from tests.trust.run import KEY, convsync, write_config
from tests.trust.servers import Reply, Script, ScriptedServer, Seen, empty_list

BASE_PATH = "/tenants/t/api/v2"
AID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CID = "1e2d3c4b-5a69-7887-96a5-b4c3d2e1f0a9"


@pytest.fixture
def redirector(ca: trustme.CA) -> Iterator[ScriptedServer]:
    """The HTTPS server convsync is pointed at; each test scripts its answers."""
    with ScriptedServer(tls=server_context(ca, "127.0.0.1")) as server:
        yield server


def to(origin: str, status: int = 307) -> Script:
    """A script redirecting every request to the same path on ``origin``."""

    def script(seen: Seen) -> Reply:
        return Reply(status, {"Location": origin + seen.path})

    return script


def client_of(server: ScriptedServer, ca_file: Path) -> AgentClient:
    return AgentClient(server.origin + BASE_PATH, KEY, verify=str(ca_file), rate_limit=None, max_retries=0)


def test_a_get_redirected_to_another_port_is_refused_and_names_the_target(
    redirector: ScriptedServer, elsewhere: ScriptedServer, ca_file: Path
) -> None:
    """A 307 on the agents list to another port raises RedirectRefused naming the target and server.url;
    the other listener receives nothing."""
    redirector.script = to(elsewhere.origin)

    with client_of(redirector, ca_file) as client, pytest.raises(RedirectRefused) as info:
        client.list_agents()

    assert elsewhere.seen == []
    assert f"{elsewhere.origin}{BASE_PATH}/agents" in str(info.value)
    assert "server.url" in str(info.value)


def test_a_post_redirected_to_another_origin_sends_its_body_nowhere(
    redirector: ScriptedServer, elsewhere: ScriptedServer, ca_file: Path
) -> None:
    """A 307 on a POST (a new conversation's name) to another origin is refused: the other listener gets
    nothing, and the first server got the POST once."""
    redirector.script = to(elsewhere.origin)

    with client_of(redirector, ca_file) as client, pytest.raises(RedirectRefused):
        client.create_conversation(AID, "Quarterly secrets")

    assert elsewhere.seen == []
    assert [s.method for s in redirector.seen] == ["POST"]


def test_a_prompt_redirected_to_another_origin_goes_nowhere(
    redirector: ScriptedServer, elsewhere: ScriptedServer, ca_file: Path
) -> None:
    """A 308 on the prompt stream to another origin is refused before the prompt is re-sent anywhere."""
    redirector.script = to(elsewhere.origin, 308)

    with client_of(redirector, ca_file) as client, pytest.raises(RedirectRefused):
        list(client.stream_message(AID, CID, "the user's private prompt"))

    assert elsewhere.seen == []


def test_an_https_to_http_downgrade_is_refused(
    redirector: ScriptedServer, plain_elsewhere: ScriptedServer, ca_file: Path
) -> None:
    """A 301 from https to plain http (another port on loopback) is refused; the http listener gets nothing."""
    redirector.script = to(plain_elsewhere.origin, 301)

    with client_of(redirector, ca_file) as client, pytest.raises(RedirectRefused) as info:
        client.list_agents()

    assert plain_elsewhere.seen == []
    assert plain_elsewhere.origin.startswith("http://") and plain_elsewhere.origin in str(info.value)


def test_a_get_redirected_within_the_origin_is_followed(redirector: ScriptedServer, ca_file: Path) -> None:
    """A GET's redirect to another path of the same origin is followed, with the key (documented)."""

    def script(seen: Seen) -> Reply:
        if seen.path.startswith(f"{BASE_PATH}/agents?") or seen.path == f"{BASE_PATH}/agents":
            return Reply(307, {"Location": f"{BASE_PATH}/agents/"})
        return empty_list(seen)

    redirector.script = script

    with client_of(redirector, ca_file) as client:
        assert client.list_agents() == []

    assert [s.path for s in redirector.seen] == [f"{BASE_PATH}/agents", f"{BASE_PATH}/agents/"]
    assert all(s.authorized for s in redirector.seen)


def test_a_post_redirected_within_the_origin_is_not_resent(redirector: ScriptedServer, ca_file: Path) -> None:
    """A 307 on a POST to the same origin is refused too: the body is sent once, never again."""

    def script(seen: Seen) -> Reply:
        if seen.path.endswith("/conversations"):
            return Reply(307, {"Location": seen.path + "/"})
        return empty_list(seen)

    redirector.script = script

    with client_of(redirector, ca_file) as client, pytest.raises(RedirectRefused) as info:
        client.create_conversation(AID, "Only once")

    assert [(s.method, s.path) for s in redirector.seen] == [("POST", f"{BASE_PATH}/agents/{AID}/conversations")]
    assert "body" in str(info.value)


def test_sync_stops_on_a_redirect_to_another_origin(
    redirector: ScriptedServer, elsewhere: ScriptedServer, ca_file: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """`convsync sync` whose agents list is redirected to another listener exits 78 (server.url is probably
    wrong) without using that listener's answer; the listener receives nothing."""
    redirector.script = to(elsewhere.origin)
    config = write_config(tmp_path, redirector.origin + BASE_PATH, f"  ca_bundle: {ca_file}\n")

    result = convsync("sync", "--config", str(config), home=isolated_home)

    assert result.returncode == Exit.CONFIG, result.stderr
    assert elsewhere.seen == []
    assert elsewhere.origin in result.stderr and "server.url" in result.stderr
