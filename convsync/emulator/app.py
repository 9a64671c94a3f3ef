"""The Agent API v2 routes (spec section 3) as a FastAPI app, wrapped in the emulated gateway.

Routes are declared once without a trailing slash and mounted under every prefix real deployments use; the
gateway strips a trailing slash before routing. Errors are always the envelope, never FastAPI's
``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from convsync.emulator import frames, wire
from convsync.emulator.admin import admin_router
from convsync.emulator.agent import auto_title
from convsync.emulator.gateway import API_PATH_PREFIX, DETACH_KEY, Gateway, route_resolver
from convsync.emulator.multipart import receive_files
from convsync.emulator.options import StreamRecord
from convsync.emulator.run import AgentRun, Emitted, user_message
from convsync.emulator.runtime import Runtime
from convsync.emulator.store import AgentRow, ConversationRow
from convsync.emulator.wire import ApiFault

logger = logging.getLogger(__name__)

PREFIXES = ("/tenants/{tid}/api/v2", "/api/v2", "/tenants/{tid}/api/v1", "/api/v1", "/api/public/v1")
INTERNAL_ORIGIN = "http://agent-server.internal:8000"  # how the agent server behind a gateway may name itself
DEFAULT_FRAME_LIMIT = 1000
MAX_FRAME_LIMIT = 100_000
_READ_CHUNK = 64 * 1024
_SYNC_RUN_FAILED = "An unexpected error occurred during the synchronous run."
_FRAME_SLICE_FAILED = "Internal server error while slicing data frame"


class CompactJSONResponse(JSONResponse):
    """``ORJSONResponse`` without orjson: compact UTF-8."""

    def render(self, content: Any) -> bytes:
        return wire.compact_json(content)


class CreateConversationBody(BaseModel):
    name: str


class MessageBody(BaseModel):
    content: str


def build_app(runtime: Runtime) -> ASGIApp:
    app = FastAPI(
        title="Agent API v2 (convsync emulator)",
        default_response_class=CompactJSONResponse,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _install_error_handlers(app)
    router = _api_router(runtime)
    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix)
    app.include_router(admin_router(runtime))
    routes = [(r.path, frozenset(r.methods or ()), r.name) for r in router.routes if isinstance(r, APIRoute)]
    return Gateway(app, runtime, route_resolver(routes))


def _install_error_handlers(app: FastAPI) -> None:
    async def api_fault(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiFault)
        return CompactJSONResponse(wire.envelope(exc.status, exc.message, exc.code), status_code=exc.status)

    async def validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return CompactJSONResponse(wire.envelope(422, validation_message(exc.errors())), status_code=422)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return CompactJSONResponse(
            wire.envelope(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected(_: Request, exc: Exception) -> Response:
        return CompactJSONResponse(wire.envelope(500, str(exc) or type(exc).__name__), status_code=500)

    app.add_exception_handler(ApiFault, api_fault)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def validation_message(errors: Any) -> str:
    """``"Request validation failed: body -> content: Field required"``; several joined by ``"; "``."""
    parts = [" -> ".join(str(p) for p in error.get("loc", ())) + ": " + str(error.get("msg", "")) for error in errors]
    return "Request validation failed: " + "; ".join(parts)


def _check_uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ApiFault(400, f"Invalid UUID: {value}") from None


def _api_router(runtime: Runtime) -> APIRouter:  # noqa: PLR0915 - one closure per route reads best
    router = APIRouter()
    store = runtime.store

    def agent_or_404(aid: str) -> AgentRow:
        _check_uuid(aid)
        agent = store.agent(aid)
        if agent is None or agent.hidden:
            raise ApiFault(404, f"Agent {aid} not found")
        return agent

    def conversation_or_404(aid: str, cid: str) -> ConversationRow:
        agent_or_404(aid)
        _check_uuid(cid)
        conversation = store.conversation(cid)
        if conversation is None:
            raise ApiFault(404, f"Conversation {cid} not found")
        return conversation

    def nulled(items: list[Any]) -> list[Any] | None:
        """``null_collections``: an empty collection is sent as ``null``, the way a server might."""
        return None if runtime.options.null_collections and not items else items

    def rest_message(stored: dict[str, Any]) -> dict[str, Any]:
        message = wire.to_rest(stored)
        message["content"] = nulled(message["content"])
        return message

    def paginated(request: Request, items: list[Any]) -> dict[str, Any]:
        options = runtime.options
        if options.page_size <= 0:
            return {"next": None, "has_more": False, "data": nulled(items)}
        offset = _decode_token(request.query_params.get("next"))
        stop = offset + options.page_size
        if stop >= len(items):
            return {"next": None, "has_more": False, "data": items[offset:]}
        token = _encode_token(stop)
        url = request.url.include_query_params(next=token)
        internal = f"/api/public/v1{API_PATH_PREFIX.sub('', url.path)}?{url.query}"
        following = {
            "token": token,
            "url": str(url),
            "path": f"{url.path}?{url.query}",
            "internal-url": INTERNAL_ORIGIN + internal,
            "internal-path": internal,
            "other-scheme": str(url.replace(scheme="https" if url.scheme == "http" else "http", port=None)),
        }[options.next_form]
        return {"next": following, "has_more": True, "data": items[offset:stop]}

    @router.get("/agents", name="list_agents")
    async def list_agents(
        request: Request,
        limit: int | None = None,  # noqa: ARG001 - declared (and validated) by the server, then ignored
        name: str | None = None,
    ) -> Any:
        agents = store.agents()
        if name:
            agents = [a for a in agents if a.name.lower().startswith(name.lower())]
        return paginated(request, [a.to_wire() for a in agents])

    @router.get("/agents/{aid}", name="get_agent")
    async def get_agent(aid: str) -> Any:
        return agent_or_404(aid).to_wire()

    @router.get("/agents/{aid}/conversations", name="list_conversations")
    async def list_conversations(request: Request, aid: str, limit: int | None = None) -> Any:
        agent_or_404(aid)
        rows = store.conversations(aid)
        items = [c.to_wire() for c in rows]
        hints = runtime.options.list_updated_at
        if hints != "off":
            changed = store.changed_at(aid) if hints == "on" else {}
            for item, row in zip(items, rows, strict=True):
                item["updated_at"] = wire.rest_time(changed.get(row.id, row.created_at))
        if limit is not None:
            items = items[:limit]  # a plain slice, as the server does (no bounds)
        return paginated(request, items)

    @router.post("/agents/{aid}/conversations", name="create_conversation")
    async def create_conversation(aid: str, body: CreateConversationBody) -> Any:
        agent_or_404(aid)
        return store.create_conversation(aid, body.name).to_wire()

    @router.delete("/agents/{aid}/conversations/{cid}", name="delete_conversation")
    async def delete_conversation(aid: str, cid: str) -> Any:
        conversation = conversation_or_404(aid, cid)
        store.delete_conversation(cid)
        if runtime.options.delete_no_content:
            return Response(status_code=204)
        return conversation.to_wire()

    @router.get("/agents/{aid}/conversations/{cid}/messages", name="list_messages")
    async def list_messages(request: Request, aid: str, cid: str) -> Any:
        conversation_or_404(aid, cid)
        return paginated(request, [rest_message(m) for m in store.messages(cid)])

    @router.post("/agents/{aid}/conversations/{cid}/messages", name="post_message")
    async def post_message(aid: str, cid: str, body: MessageBody) -> Any:
        conversation = conversation_or_404(aid, cid)
        first_run = store.message_count(cid) == 0
        store.add_message(cid, user_message(body.content))
        options = runtime.options
        run = AgentRun(
            store,
            runtime.agent,
            conversation,
            body.content,
            chunk_size=options.chunk_size,
            chunk_delay=options.chunk_delay,
        )
        renamed = False
        async for emitted in run.events():
            renamed = renamed or emitted.payload.get("event_type") == "thread_name_updated"
        if run.crashed is not None:
            raise ApiFault(500, _SYNC_RUN_FAILED)
        if first_run and not renamed and (not conversation.user_named or options.auto_rename_named):
            store.rename_conversation(cid, auto_title(body.content))
        return {"next": None, "has_more": False, "data": [rest_message(m) for m in store.messages(cid)]}

    @router.post("/agents/{aid}/conversations/{cid}/stream", name="stream_message")
    async def stream_message(request: Request, aid: str, cid: str, body: MessageBody) -> Any:
        conversation = conversation_or_404(aid, cid)
        store.add_message(cid, user_message(body.content))
        options = runtime.options
        run = AgentRun(
            store,
            runtime.agent,
            conversation,
            body.content,
            chunk_size=options.chunk_size,
            chunk_delay=options.chunk_delay,
        )
        detach = bool(request.scope.get(DETACH_KEY))
        return EventSourceResponse(_sse_events(runtime, run, cid, detach), ping=options.ping_interval, sep="\r\n")

    @router.get("/agents/{aid}/conversations/{cid}/files", name="list_files")
    async def list_files(aid: str, cid: str) -> Any:
        conversation_or_404(aid, cid)
        user_id = runtime.options.user_id
        return nulled([f.to_wire(store.blob_path(cid, f.file_id), user_id) for f in store.files(cid)])

    @router.post("/agents/{aid}/conversations/{cid}/files", name="upload_files")
    async def upload_files(request: Request, aid: str, cid: str) -> Any:
        conversation = conversation_or_404(aid, cid)
        staged = await receive_files(request.stream(), request.headers.get("content-type", ""), store)
        rows = store.commit_files(conversation, staged)
        user_id = runtime.options.user_id
        return [f.to_wire(store.blob_path(cid, f.file_id), user_id) for f in rows]

    @router.get("/agents/{aid}/conversations/{cid}/files/download", name="download_file")
    async def download_file(aid: str, cid: str, file_ref: str) -> Any:
        conversation_or_404(aid, cid)
        row = store.file(cid, file_ref)
        if row is None:
            raise ApiFault(404, f"File {file_ref} not found")
        handle = store.blob_path(cid, row.file_id).open("rb")  # opened now: a replaced file keeps streaming
        return _FileResponse(handle, media_type=row.mime_type)

    @router.get("/agents/{aid}/conversations/{cid}/data-frames", name="list_data_frames")
    async def list_data_frames(aid: str, cid: str, num_samples: int = 0) -> Any:
        conversation_or_404(aid, cid)
        result = []
        for frame in store.frames(cid):
            samples: list[list[Any]] = []
            if num_samples != 0:
                path = store.frame_path(cid, frame.data_frame_id)
                samples = await runtime.offload(partial(frames.sample_rows, path, num_samples))
            result.append(frame.to_wire(samples))
        return nulled(result)

    @router.get("/agents/{aid}/conversations/{cid}/data-frames/{data_frame_name}", name="get_data_frame")
    async def get_data_frame(  # noqa: PLR0917 - FastAPI reads the route's parameters from the signature
        aid: str,
        cid: str,
        data_frame_name: str,
        offset: int = 0,
        limit: int | None = Query(None, ge=-1, le=MAX_FRAME_LIMIT),
        column_names: str | None = None,
        order_by: str | None = None,
        output_format: str = "json",
    ) -> Any:
        formats = ("json", "parquet") if runtime.options.parquet_output else ("json",)
        if output_format not in formats:
            allowed = " or ".join(f"'{f}'" for f in formats)
            raise ApiFault(422, f"Request validation failed: query -> output_format: Input should be {allowed}")
        conversation_or_404(aid, cid)
        frame = store.frame(cid, data_frame_name)
        if frame is None:
            raise ApiFault(404, f"Data frame {data_frame_name} not found in thread {cid}")
        path = store.frame_path(cid, frame.data_frame_id)
        how = frames.Slice(
            offset=offset,
            limit=DEFAULT_FRAME_LIMIT if limit is None else limit,
            column_names=column_names,
            order_by=order_by,
            cap=runtime.options.frame_row_cap,
        )
        disposition = _attachment(f"{data_frame_name}.parquet")
        if output_format == "parquet" and disposition is None:
            if runtime.options.hostile_frame_names == "fail":
                raise ApiFault(500, _header_failure(data_frame_name))
            disposition = f"attachment; filename*=utf-8''{quote(data_frame_name + '.parquet')}"
        if output_format == "json":
            try:
                records = await runtime.offload(partial(frames.records_slice, path, how))
            except frames.ColumnsNotFound:
                raise ApiFault(500, _FRAME_SLICE_FAILED) from None
            return records
        target = store.temp_path(".parquet")
        try:
            await runtime.offload(partial(frames.parquet_slice, path, target, how))
        except frames.ColumnsNotFound:
            target.unlink(missing_ok=True)
            raise ApiFault(500, _FRAME_SLICE_FAILED) from None
        handle = target.open("rb")
        target.unlink()  # the open handle keeps the data until the stream ends
        return _FileResponse(
            handle,
            media_type="application/octet-stream",
            headers={"Content-Disposition": disposition or ""},
        )

    return router


async def _sse_events(runtime: Runtime, run: AgentRun, cid: str, detach: bool) -> AsyncIterator[ServerSentEvent]:
    """Relays a run that lives in its own task: a client that goes away cancels it (unless ``detach``)."""
    queue: asyncio.Queue[Emitted | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for emitted in run.events():
                queue.put_nowait(emitted)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    runtime.run_tasks.add(task)
    task.add_done_callback(_forget(runtime))
    try:
        while (emitted := await queue.get()) is not None:
            yield ServerSentEvent(data=wire.sse_json(emitted.payload), event=emitted.event)
            if emitted.text is not None and emitted.message_id is not None:
                runtime.record_text(StreamRecord(emitted.message_id, emitted.text, time.time(), cid))
    finally:
        if not detach and not task.done():
            task.cancel()


def _forget(runtime: Runtime) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        runtime.run_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("agent run failed", exc_info=task.exception())

    return done


class _FileResponse(StreamingResponse):
    """Streams an open file and closes it however the response ends: a client that goes away before the
    body's first read (a throttled answer, a killed client) leaves the generator unstarted, so its own
    ``finally`` never runs."""

    def __init__(self, handle: Any, **kwargs: Any) -> None:
        super().__init__(_read_chunks(handle), **kwargs)
        self._handle = handle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._handle.close()


async def _read_chunks(handle: Any) -> AsyncIterator[bytes]:
    """Streams an open file in 64 KiB reads, never the whole file in memory."""
    try:
        while chunk := handle.read(_READ_CHUNK):
            yield chunk
    finally:
        handle.close()


def _attachment(filename: str) -> str | None:
    """The server's ``Content-Disposition``; ``None`` when the name cannot be in a header as it is."""
    try:
        filename.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in filename):
        return None
    return f"attachment; filename={filename}"


def _header_failure(name: str) -> str:
    """What the real server's catch-all says when the header of a frame named ``name`` cannot be sent."""
    try:
        f"{name}.parquet".encode("latin-1")
    except UnicodeEncodeError as exc:
        return str(exc)
    return f"Illegal header value b'attachment; filename={name}.parquet'"


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"convsync:{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "convsync" or not number.isdigit():
            raise ValueError(token)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiFault(400, f"Invalid next token: {token}") from None
