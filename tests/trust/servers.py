"""Loopback servers for the trust tests: a TLS front for the emulator, and a scripted server that records.

Both listen on 127.0.0.1 (a free port), serve from threads they own, and join them on exit.
"""

from __future__ import annotations

import http.server
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Seen:
    """One request a scripted server received."""

    method: str
    path: str
    body: bytes
    authorized: bool  # it carried an Authorization header


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Script = Callable[[Seen], Reply]


def empty_list(_: Seen) -> Reply:
    """What an unauthenticated catch-all would answer: an empty page."""
    return Reply(200, {"Content-Type": "application/json"}, b'{"data": [], "has_more": false, "next": null}')


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    block_on_close = True


class ScriptedServer:
    """An HTTP(S) server that answers every request with ``script(request)`` and records what it received."""

    def __init__(self, script: Script = empty_list, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.seen: list[Seen] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Seen(self.command, self.path, body, "Authorization" in self.headers)
                owner.seen.append(request)
                reply = owner.script(request)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _ThreadingServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class TlsFront:
    """A TLS-terminating proxy on loopback: TLS with ``context`` in front, plain TCP to ``backend_port`` behind.

    ``connections`` counts the connections that reached the backend (a TLS handshake the client refused
    never gets there, so no request, and no key, left the client).
    """

    def __init__(self, context: ssl.SSLContext, backend_port: int, path: str) -> None:
        self._context = context
        self._path = path
        self._backend = ("127.0.0.1", backend_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept_loop)

    def base_url(self, host: str = "127.0.0.1") -> str:
        """The API base URL through the front (``host``: the name to address it by)."""
        return f"https://{host}:{self.port}{self._path}"

    def __enter__(self) -> TlsFront:
        self._accepting.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._accepting.join()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(raw,))
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate: nothing reaches the backend
            return
        self.connections += 1
        try:
            backend = socket.create_connection(self._backend, timeout=10)
        except OSError:
            client.close()
            return
        with client, backend:
            _relay(client, backend, self._stop)


def _relay(client: ssl.SSLSocket, backend: socket.socket, stop: threading.Event) -> None:
    """Bytes both ways until either side closes; one thread, so the TLS object is never used concurrently."""
    while not stop.is_set():
        ready = [client] if client.pending() else select.select([client, backend], [], [], 0.1)[0]
        for source in ready:
            target = backend if source is client else client
            try:
                data = source.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return
