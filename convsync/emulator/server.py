"""``EmulatorServer``: the emulator on a real loopback port, run by uvicorn in a thread it owns and joins.

Used in-process by tests (``with EmulatorServer(opts) as emu: ...``) and by ``convsync emulator``. ``stop()``
drops every connection like a crashing server would; ``start()`` again serves the same port with the same
state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from convsync.emulator import wire
from convsync.emulator.app import build_app
from convsync.emulator.gateway import ADMIN_PREFIX, TRANSPORT_KEY
from convsync.emulator.options import EmulatorOptions, FaultRule, FaultState, RequestRecord, StreamRecord
from convsync.emulator.run import injected_message
from convsync.emulator.runtime import Runtime, WorkerPool
from convsync.emulator.store import Store

EXIT_CANNOT_LISTEN = 75  # the CLI's TRANSIENT: the port is taken, trying again later may work
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0
_ANY_KEY_EXAMPLE = "s4w_emulator"


def _protocol_class(runtime: Runtime) -> type[H11Protocol]:
    """uvicorn's h11 protocol that hands each request its transport, so faults can reset the connection."""

    class EmulatorProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            assert isinstance(transport, asyncio.Transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # asyncio skips this for sockets made without an explicit IPPROTO_TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            runtime.transports.add(transport)
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:  # uvicorn's ASGI types, passed through
                scope[TRANSPORT_KEY] = transport
                await inner(scope, receive, send)

            self.app = app

        def connection_lost(self, exc: Exception | None) -> None:
            runtime.transports.discard(self.transport)
            super().connection_lost(exc)

    return EmulatorProtocol


class EmulatorServer:
    def __init__(self, options: EmulatorOptions | None = None, **changes: Any) -> None:
        options = replace(options or EmulatorOptions(), **changes)
        self._temp_root: str | None = None
        if options.data_dir is None:
            self._temp_root = tempfile.mkdtemp(prefix="convsync-emulator-")
            root = Path(self._temp_root)
        else:
            root = options.data_dir
        self._store = Store(root, durable=options.data_dir is not None)
        self._runtime = Runtime(options, self._store)
        self._port = options.port
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._store, self._temp_root)
        for name in options.seed_agents:
            if not any(a.name == name for a in self._store.agents(include_hidden=True)):
                self._store.add_agent(
                    name,
                    mode="conversational",
                    description="The scripted agent of the convsync emulator",
                    agent_id=wire.stable_id("agent:" + name),
                )

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Serves on the configured port (a free one when 0); returns once it accepts requests."""
        if self._closed:
            raise RuntimeError("this emulator was closed")
        if self._thread is not None:
            return self
        options = self._runtime.options
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((options.host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        executor = WorkerPool(2, f"convsync-emulator-worker-{self._port}")
        self._runtime.executor = executor
        config = uvicorn.Config(
            build_app(self._runtime),
            http=_protocol_class(self._runtime),
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._failure = None
        self._thread = threading.Thread(target=self._serve, args=(server, sock), name=f"convsync-emulator-{self._port}")
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(timeout=_STOP_TIMEOUT)
                self._thread = None
                executor.shutdown(wait=True)
                raise RuntimeError(f"the emulator did not start: {self._failure!r}")
            time.sleep(0.01)
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start() or stop()
            self._failure = exc
        finally:
            sock.close()

    def stop(self) -> None:
        """Drops every connection and run, stops serving and joins the thread; the state stays."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._abort_everything, server)
        server.should_exit = True
        thread.join(timeout=_STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join()
        self._thread = None
        self._server = None
        self._loop = None
        if self._runtime.executor is not None:
            self._runtime.executor.shutdown(wait=True, cancel_futures=True)
            self._runtime.executor = None

    def _abort_everything(self, server: uvicorn.Server) -> None:
        for task in list(self._runtime.run_tasks):
            task.cancel()
        for transport in list(self._runtime.transports):
            transport.abort()
        for request_task in list(server.server_state.tasks):
            request_task.cancel()

    def close(self) -> None:
        """Stops and releases the state (a temp state dir is deleted; a ``data_dir`` is kept)."""
        self.stop()
        self._closed = True
        self._finalizer()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None

    # --- addresses ------------------------------------------------------------------------------------------

    @property
    def options(self) -> EmulatorOptions:
        return self._runtime.options

    @property
    def state_dir(self) -> Path:
        """Where the state lives: the ``data_dir``, or the temp dir that ``close()`` deletes."""
        return self._store.root

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> str:
        host = self._runtime.options.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - only naming the wildcard, not binding it
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/tenants/{self._runtime.options.tenant}/api/v2"

    @property
    def admin_url(self) -> str:
        return self.origin + ADMIN_PREFIX

    @property
    def api_key(self) -> str:
        """A key the emulator accepts (any ``s4w_`` key works when none was configured)."""
        return self._runtime.options.api_key or _ANY_KEY_EXAMPLE

    # --- run-time controls ----------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorOptions:
        """Changes options while running (e.g. ``page_size``, ``rate_limit``, ``parquet_output``)."""
        options = self._runtime.configure(**changes)
        if "rate_limit" in changes or "rate_window" in changes:
            self._runtime.limiter.reset()
        return options

    def set_faults(self, rules: Sequence[FaultRule]) -> None:
        self._runtime.faults.set(tuple(rules))

    def add_fault(self, rule: FaultRule) -> None:
        self._runtime.faults.add(rule)

    def clear_faults(self) -> None:
        self._runtime.faults.set(())

    @property
    def faults(self) -> list[FaultState]:
        return self._runtime.faults.snapshot()

    @property
    def active_runs(self) -> int:
        """Agent runs still going (streams in flight, or runs a cut stream let finish)."""
        return len(self._runtime.run_tasks)

    @property
    def requests(self) -> list[RequestRecord]:
        return self._runtime.requests

    def clear_requests(self) -> None:
        self._runtime.clear_requests()

    @property
    def stream_log(self) -> list[StreamRecord]:
        return self._runtime.stream_log

    def clear_stream_log(self) -> None:
        self._runtime.clear_stream_log()

    # --- state ----------------------------------------------------------------------------------------------

    def agent_id(self, name: str) -> str:
        for agent in self._store.agents(include_hidden=True):
            if agent.name == name:
                return agent.id
        raise KeyError(f"no agent named {name!r}")

    def add_agent(self, name: str, mode: str = "conversational", *, description: str = "", hidden: bool = False) -> str:
        if mode not in ("conversational", "worker"):
            raise ValueError(f"mode must be 'conversational' or 'worker', got {mode!r}")
        return self._store.add_agent(name, mode=mode, description=description, hidden=hidden).id

    def create_conversation(self, agent_id: str, name: str = "") -> str:
        """A conversation made by someone else (another client, the web UI)."""
        return self._store.create_conversation(agent_id, name).id

    def rename_conversation(self, conversation_id: str, name: str) -> None:
        self._store.rename_conversation(conversation_id, name)

    def delete_conversation(self, conversation_id: str) -> None:
        self._store.delete_conversation(conversation_id)

    def inject_message(
        self, conversation_id: str, text: str, role: str = "agent", *, complete: bool = True, no_content: bool = False
    ) -> dict[str, Any]:
        """A message that appears without a run (written by another client or a background agent).

        ``complete=False`` stores it unfinished (as a failed or cancelled run might leave it); ``no_content``
        stores it without any content part.
        """
        message = injected_message(text, role, complete=complete, no_content=no_content)
        self._store.add_message(conversation_id, message)
        return wire.to_rest(message)

    def edit_message(
        self, conversation_id: str, message_id: str, *, text: str | None = None, shift_seconds: float = 0.0
    ) -> None:
        """Change a stored message as a server may do later: its text parts become ``text`` (when given) and
        its ``created_at`` moves by ``shift_seconds``."""
        for message in self._store.messages(conversation_id):
            if message["message_id"] != message_id:
                continue
            if text is not None:
                texts = [p for p in message["content"] if p.get("kind") == "text"]
                for part in texts:
                    part["text"] = ""
                if texts:
                    texts[0]["text"] = text
            if shift_seconds:
                moved = wire.parse_time(message["created_at"]) + timedelta(seconds=shift_seconds)
                message["created_at"] = wire.sse_time(moved)
            self._store.replace_message(conversation_id, message)
            return
        raise KeyError(f"no message {message_id!r} in conversation {conversation_id}")

    def conversations(self, agent_id: str) -> list[dict[str, Any]]:
        return [c.to_wire() for c in self._store.conversations(agent_id)]

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return [wire.to_rest(m) for m in self._store.messages(conversation_id)]

    def user_messages(self, conversation_id: str) -> list[str]:
        return [
            "".join(part.get("text", "") for part in m["content"] if part.get("kind") == "text")
            for m in self._store.messages(conversation_id)
            if m["role"] == "user"
        ]

    def file_hashes(self, conversation_id: str) -> dict[str, str]:
        return {f.file_ref: f.file_hash for f in self._store.files(conversation_id)}

    def file_path(self, conversation_id: str, file_ref: str) -> Path:
        row = self._store.file(conversation_id, file_ref)
        if row is None:
            raise KeyError(f"no file {file_ref!r} in conversation {conversation_id}")
        return self._store.blob_path(conversation_id, row.file_id)

    def data_frame_names(self, conversation_id: str) -> list[str]:
        return [f.name for f in self._store.frames(conversation_id)]


def _release(store: Store, temp_root: str | None) -> None:
    store.close()
    if temp_root is not None:
        shutil.rmtree(temp_root, ignore_errors=True)


def serve_from_args(args: argparse.Namespace) -> int:
    """``convsync emulator``: serve until SIGINT/SIGTERM, printing the base URL and a key that works."""
    options = EmulatorOptions(
        api_key=args.api_key,
        data_dir=args.data_dir,
        seed_agents=tuple(n.strip() for n in str(args.seed_agents or "").split(",") if n.strip()),
        parquet_output=not args.no_parquet,
        page_size=args.page_size,
        next_form=args.next_form,
        auth=args.auth != "none",
        auth_scheme="snowflake" if args.auth == "snowflake" else "bearer",
        null_collections=args.null_collections,
        delete_no_content=args.delete_no_content,
        hostile_frame_names=args.hostile_frame_names,
        list_updated_at=args.list_updated_at,
        rate_limit=args.rate_limit,
        port=args.port,
        host=args.host,
    )
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    emulator = EmulatorServer(options)
    try:
        try:
            emulator.start()
        except OSError as exc:
            print(f"convsync emulator: cannot listen on {options.host}:{options.port}: {exc}", file=sys.stderr)
            return EXIT_CANNOT_LISTEN
        key_note = "" if options.api_key else " (any key starting with s4w_ is accepted)"
        print(f"Agent API emulator serving at {emulator.base_url}")
        if not options.auth:
            print("API key: none needed (no auth, like a local agent server)")
        elif options.auth_scheme == "snowflake":
            print(f'API key: {emulator.api_key}{key_note} (sent as Authorization: Snowflake Token="<key>")')
        else:
            print(f"API key: {emulator.api_key}{key_note}")
        print(f"Admin API: {emulator.admin_url}")
        if options.data_dir is not None:
            print(f"State: {options.data_dir}")
        sys.stdout.flush()
        while not stopping.wait(0.5):
            pass
        return 0
    finally:
        emulator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
