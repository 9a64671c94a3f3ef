"""Conformance: the vendor's published client, ``sema4ai-api-client`` 3.0.0, drives the emulator.

Every agents/conversations/messages/files/data-frames call of its ``api.agents`` package is made through the
client's own functions, and each answer must parse into the client's models (the generated ``from_dict``
raise on missing required keys and wrong enum values). Two routes cannot be consumed by the client as
generated, for reasons of its own code, not of the server:

- ``post_public_api_messages_simple_…_stream_post`` calls ``response.json()`` on a ``text/event-stream`` body,
  which can never parse; the route is exercised with the client's request builder and read as SSE here.
- ``get_conversation_data_frame_…`` calls ``response.json()`` on every 200, so ``output_format=parquet``
  cannot parse either; the Parquet request is built by the client and its bytes read with pyarrow.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from http import HTTPStatus

import pyarrow.parquet as pq
import pytest
from sema4ai_api_client import AuthenticatedClient
from sema4ai_api_client.api.agents import (
    create_conversation_agents_aid_conversations_post as create_conversation,
)
from sema4ai_api_client.api.agents import (
    delete_chat_agents_aid_conversations_cid_delete as delete_conversation,
)
from sema4ai_api_client.api.agents import (
    download_conversation_file_agents_aid_conversations_cid_files_download_get as download_file,
)
from sema4ai_api_client.api.agents import get_agent_by_name_agents_aid_get as get_agent
from sema4ai_api_client.api.agents import get_agents_agents_get as list_agents
from sema4ai_api_client.api.agents import (
    get_chat_messages_agents_aid_conversations_cid_messages_get as list_messages,
)
from sema4ai_api_client.api.agents import (
    get_conversation_data_frame_agents_aid_conversations_cid_data_frames_data_frame_name_get as get_frame,
)
from sema4ai_api_client.api.agents import (
    get_conversation_data_frames_agents_aid_conversations_cid_data_frames_get as list_frames,
)
from sema4ai_api_client.api.agents import (
    get_conversation_files_agents_aid_conversations_cid_files_get as list_files,
)
from sema4ai_api_client.api.agents import get_conversations_agents_aid_conversations_get as list_conversations
from sema4ai_api_client.api.agents import (
    post_messages_simple_agents_aid_conversations_cid_messages_post as post_message,
)
from sema4ai_api_client.api.agents import (
    post_public_api_messages_simple_agents_aid_conversations_cid_stream_post as stream_message,
)
from sema4ai_api_client.api.agents import (
    upload_conversation_files_agents_aid_conversations_cid_files_post as upload_files,
)
from sema4ai_api_client.models import (
    AgentCompat,
    BodyUploadConversationFilesAgentsAidConversationsCidFilesPost,
    ChatMessageRequest,
    Conversation,
    CreateChatRequest,
    DataFrameCreationAPI,
    ErrorEnvelope,
    PaginatedResponse,
    ThreadMessage,
    ThreadTextContent,
    ThreadThoughtContent,
)
from sema4ai_api_client.models.get_conversation_data_frame_agents_aid_conversations_cid_data_frames_data_frame_name_get_output_format import (  # noqa: E501
    GetConversationDataFrameAgentsAidConversationsCidDataFramesDataFrameNameGetOutputFormat as OutputFormat,
)
from sema4ai_api_client.types import File

from convsync.emulator import EmulatorOptions, EmulatorServer

CSV = b"city,temp\nOslo,21\nLima,18\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions()) as emu:
        yield emu


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[AuthenticatedClient]:
    vendor = AuthenticatedClient(base_url=emulator.base_url, token=emulator.api_key, raise_on_unexpected_status=True)
    with vendor:
        yield vendor


@pytest.fixture
def aid(emulator: EmulatorServer) -> str:
    return emulator.agent_id("Demo Agent")


@pytest.fixture
def cid(client: AuthenticatedClient, aid: str) -> str:
    created = create_conversation.sync(aid, client=client, body=CreateChatRequest(name="Vendor client"))
    assert isinstance(created, Conversation)
    return created.id


def upload(client: AuthenticatedClient, aid: str, cid: str, name: str, data: bytes) -> list[object]:
    body = BodyUploadConversationFilesAgentsAidConversationsCidFilesPost(
        files=[File(payload=io.BytesIO(data), file_name=name, mime_type="application/octet-stream")]
    )
    response = upload_files.sync_detailed(aid, cid, client=client, body=body)
    assert response.status_code == HTTPStatus.OK
    assert isinstance(response.parsed, list)
    return list(response.parsed)


def test_list_agents(client: AuthenticatedClient) -> None:
    """get_agents parses as PaginatedResponse and every item as AgentCompat."""
    page = list_agents.sync(client=client)
    assert isinstance(page, PaginatedResponse)
    agents = [AgentCompat.from_dict(item) for item in page.data]
    assert any(a.name == "Demo Agent" and a.mode == "conversational" for a in agents)
    assert page.has_more is False and page.next_ is None


def test_list_agents_by_name(client: AuthenticatedClient) -> None:
    """The ``name`` filter of get_agents works through the client."""
    page = list_agents.sync(client=client, name="demo")
    assert isinstance(page, PaginatedResponse)
    assert [AgentCompat.from_dict(item).name for item in page.data] == ["Demo Agent"]


def test_get_agent(client: AuthenticatedClient, aid: str) -> None:
    """get_agent_by_name (which looks up by id) parses as AgentCompat."""
    agent = get_agent.sync(aid, client=client)
    assert isinstance(agent, AgentCompat) and agent.id == aid


def test_missing_agent_parses_as_error_envelope(client: AuthenticatedClient) -> None:
    """A 404 parses as ErrorEnvelope with a UUID error_id."""
    missing = get_agent.sync(str(uuid.uuid4()), client=client)
    assert isinstance(missing, ErrorEnvelope)
    assert missing.error.code == "not_found" and isinstance(missing.error.error_id, uuid.UUID)


def test_create_conversation(client: AuthenticatedClient, aid: str) -> None:
    """create_conversation answers 200 and parses as Conversation."""
    response = create_conversation.sync_detailed(aid, client=client, body=CreateChatRequest(name="Made by vendor"))
    assert response.status_code == HTTPStatus.OK
    assert isinstance(response.parsed, Conversation) and response.parsed.name == "Made by vendor"


def test_list_conversations(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """get_conversations parses, items as Conversation, newest first."""
    page = list_conversations.sync(aid, client=client, limit=5)
    assert isinstance(page, PaginatedResponse)
    conversations = [Conversation.from_dict(item) for item in page.data]
    assert conversations[0].id == cid and len(conversations) <= 5


def test_delete_conversation(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """delete_chat parses the deleted Conversation; a second delete parses as ErrorEnvelope."""
    deleted = delete_conversation.sync(aid, cid, client=client)
    assert isinstance(deleted, Conversation) and deleted.id == cid
    assert isinstance(delete_conversation.sync(aid, cid, client=client), ErrorEnvelope)


def test_sync_post_and_messages(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """post_messages_simple and get_chat_messages parse; every message as ThreadMessage with typed parts."""
    page = post_message.sync(aid, cid, client=client, body=ChatMessageRequest(content="What is the weather?"))
    assert isinstance(page, PaginatedResponse)
    messages = [ThreadMessage.from_dict(item) for item in page.data]
    assert [m.role.value for m in messages] == ["user", "agent"]
    thought, text = messages[1].content
    assert isinstance(thought, ThreadThoughtContent) and isinstance(text, ThreadTextContent)
    assert text.text == "You said: What is the weather?"
    listed = list_messages.sync(aid, cid, client=client)
    assert isinstance(listed, PaginatedResponse)
    assert [ThreadMessage.from_dict(item).message_id for item in listed.data] == [m.message_id for m in messages]


def test_rich_parts_parse(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """Tool calls, vega charts and attachments parse into the client's part models."""
    upload(client, aid, cid, "pic.png", b"\x89PNG")
    kinds = []
    for prompt in ("/tool", "/chart", "/attach pic.png"):
        page = post_message.sync(aid, cid, client=client, body=ChatMessageRequest(content=prompt))
        assert isinstance(page, PaginatedResponse)
        kinds.append(type(ThreadMessage.from_dict(page.data[-1]).content[1]).__name__)
    assert kinds == ["ThreadToolUsageContent", "ThreadVegaChartContent", "ThreadAttachmentContent"]


def test_upload_and_list_files(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """upload_conversation_files and get_conversation_files parse into their item models."""
    [uploaded] = upload(client, aid, cid, "weather.csv", CSV)
    assert uploaded["file_ref"] == "weather.csv"  # type: ignore[index]
    files = list_files.sync(aid, cid, client=client)
    assert isinstance(files, list)
    assert [f["file_ref"] for f in files] == ["weather.csv"]  # type: ignore[index]


def test_download_file_bytes_are_equal(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """download_conversation_file (``/files/download/``) returns exactly the uploaded bytes."""
    payload = bytes(range(256)) * 100
    upload(client, aid, cid, "blob.bin", payload)
    downloaded = download_file.sync(aid, cid, client=client, file_ref="blob.bin")
    assert isinstance(downloaded, File)
    assert downloaded.payload.read() == payload


@pytest.fixture
def frame(client: AuthenticatedClient, aid: str, cid: str) -> str:
    upload(client, aid, cid, "weather.csv", CSV)
    post_message.sync(aid, cid, client=client, body=ChatMessageRequest(content="/frame weather.csv"))
    return "weather"


def test_list_data_frames(client: AuthenticatedClient, aid: str, cid: str, frame: str) -> None:
    """get_conversation_data_frames parses every item as DataFrameCreationAPI (all keys required)."""
    frames = list_frames.sync(aid, cid, client=client, num_samples=1)
    assert isinstance(frames, list)
    [item] = frames
    assert isinstance(item, DataFrameCreationAPI)
    assert item.name == frame and item.column_headers == ["city", "temp"] and item.sample_rows == [["Oslo", 21]]


def test_data_frame_as_json(client: AuthenticatedClient, aid: str, cid: str, frame: str) -> None:
    """get_conversation_data_frame with the default format returns the records."""
    rows = get_frame.sync(aid, cid, frame, client=client, order_by="-temp", column_names="CITY")
    assert rows == [{"city": "Oslo"}, {"city": "Lima"}]


def test_data_frame_as_parquet(client: AuthenticatedClient, aid: str, cid: str, frame: str) -> None:
    """The client's request for ``output_format=parquet`` gets a Parquet file (read here, see module doc)."""
    kwargs = get_frame._get_kwargs(aid, cid, frame, output_format=OutputFormat.PARQUET)
    response = client.get_httpx_client().request(**kwargs)
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.to_pylist() == [{"city": "Oslo", "temp": 21}, {"city": "Lima", "temp": 18}]


def test_stream_route_answers_sse_the_client_cannot_parse(client: AuthenticatedClient, aid: str, cid: str) -> None:
    """The generated stream function is unusable (it JSON-decodes SSE); its request gets a valid stream."""
    kwargs = stream_message._get_kwargs(aid, cid, body=ChatMessageRequest(content="hello"))
    response = client.get_httpx_client().request(**kwargs)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: ") :]) for line in response.text.split("\r\n") if line.startswith("data: ")]
    final = next(e for e in events if e["event_type"] == "message_end")["data"]
    message = ThreadMessage.from_dict(final)
    assert [type(part).__name__ for part in message.content] == ["ThreadThoughtContent", "ThreadTextContent"]
    with pytest.raises(json.JSONDecodeError):
        stream_message.sync(aid, cid, client=client, body=ChatMessageRequest(content="again"))
