"""What sits in front of the agent server: the request log, injected faults, the rate limit and bearer auth.

A pure ASGI middleware, outermost, so faults hit before the app runs (or after it, with ``after``) and can
act on the raw connection. The admin API under ``/_emulator`` bypasses all of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convsync.emulator import wire
from convsync.emulator.options import FaultRule, RequestRecord
from convsync.emulator.runtime import Runtime

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator"
TRANSPORT_KEY = "convsync.transport"
DETACH_KEY = "convsync.detach_run"  # set when a stream cut must let the agent run finish
# The gateway's prefixes, and the agent server's own (a local agent server serves the public API there).
API_PREFIX = r"^(?:(?:/tenants/[^/]+)?/api/v[12]|/api/public/v1)"
API_PATH = re.compile(API_PREFIX + r"(?:/|$)")
API_PATH_PREFIX = re.compile(API_PREFIX)

_EVENT_TYPE = re.compile(rb'"event_type": "([^"]+)"')
_CONCAT_OP = b'"op": "concat_string"'

_MISSING_HEADER = "Missing Authorization header"
_NOT_BEARER = "Invalid Authorization header: Expected Bearer token"
_NOT_SNOWFLAKE = 'Invalid Authorization header: Expected Snowflake Token="<token>"'
_SNOWFLAKE_TOKEN = re.compile(r'(?i)token="([^"]*)"')
_BAD_FORMAT = 'Invalid API key format: Expected key starting with "s4w_"'
_BAD_KEY = "Invalid API key"


def reset_connection(scope: Scope) -> None:
    """A real TCP reset: linger 0 makes the kernel answer the close with RST."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("no transport in scope: the emulator's protocol class is not in use")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def close_connection(scope: Scope) -> None:
    """An abrupt end of the response: what was written is flushed, then FIN, with no terminating chunk."""
    transport = scope.get(TRANSPORT_KEY)
    if transport is None:
        raise RuntimeError("no transport in scope: the emulator's protocol class is not in use")
    transport.close()


class Gateway:
    def __init__(self, app: ASGIApp, runtime: Runtime, route_name: Callable[[Scope], str | None]) -> None:
        self.app = app
        self.runtime = runtime
        self.route_name = route_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        original_path = scope["path"]
        if len(original_path) > 1 and original_path.endswith("/"):
            # Routes are declared without the slash; clients send both forms (spec section 1).
            scope = dict(scope, path=original_path.rstrip("/") or "/")
        started = time.time()
        route = self.route_name(scope)
        status = [0]
        notes: list[str] = []
        recorded = False
        last_event: list[str | None] = [None]

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.runtime.record_request(
                RequestRecord(
                    method=scope["method"],
                    path=original_path,
                    status=status[0],
                    started=started,
                    finished=time.time(),
                    query=scope.get("query_string", b"").decode("latin-1"),
                    route=route,
                    fault="; ".join(notes) or None,
                    last_event=last_event[0],
                )
            )

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif route == "stream_message" and (types := _EVENT_TYPE.findall(message.get("body", b""))):
                last_event[0] = types[-1].decode()
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last bytes leave: a complete answer is always in the log already
            await send(message)

        try:
            await self._handle(scope, receive, logged_send, route, notes)
        finally:
            record()

    async def _handle(self, scope: Scope, receive: Receive, send: Send, route: str | None, notes: list[str]) -> None:
        options = self.runtime.options
        rule = self.runtime.faults.pick(scope["method"], scope["path"], route)
        if rule is not None and rule.latency > 0:
            notes.append(f"latency {rule.latency}s")
            await asyncio.sleep(rule.latency)
        if rule is not None and not rule.after and (rule.reset or rule.status is not None):
            if rule.reset and rule.stream_cut_after is None and rule.cut_after_bytes is None:
                notes.append("reset")
                reset_connection(scope)
                return
            if rule.status is not None:
                notes.append(f"status {rule.status}")
                await send_fault(send, rule)
                return

        is_api = API_PATH.match(scope["path"]) is not None
        limit_headers: list[tuple[bytes, bytes]] = []
        if is_api and options.rate_limit > 0:
            allowed, remaining, reset = self.runtime.limiter.hit(options.rate_limit, options.rate_window)
            policy = f'"{options.rate_limit}-in-{options.rate_window:g}sec"'
            limit_headers = [
                (
                    b"ratelimit-policy",
                    f"{policy}; q={options.rate_limit}; w={options.rate_window:g}".encode(),
                ),
                (b"ratelimit", f"{policy}; r={remaining}; t={reset}".encode()),
            ]
            if not allowed:
                notes.append("rate limited")
                body = wire.gateway_envelope("rate_limit_exceeded", "Too many requests, please try again later")
                await send_json(send, 429, body, [*limit_headers, (b"retry-after", str(reset).encode())])
                return
        if is_api and options.auth:
            problem = _auth_problem(scope, options.api_key, options.auth_scheme)
            if problem is not None:
                notes.append("unauthorized")
                await send_json(send, 401, wire.gateway_envelope("unauthorized", problem), limit_headers)
                return

        app_send = send
        if limit_headers:
            app_send = _with_headers(app_send, limit_headers)
        if rule is not None:
            app_send = self._faulty_send(scope, app_send, rule, notes)
            if rule.stream_cut_after is not None and rule.finish_run:
                scope[DETACH_KEY] = True
        await self.app(scope, receive, app_send)
        if rule is not None and rule.after:
            if rule.reset:
                notes.append("reset after handling")
                reset_connection(scope)
            else:
                notes.append(f"status {rule.status} after handling")
                await send_fault(send, rule)

    def _faulty_send(self, scope: Scope, send: Send, rule: FaultRule, notes: list[str]) -> Send:
        """Wraps ``send`` with the response-shaping effects of a rule (swallow, throttle, cut)."""
        events = 0
        sent_bytes = 0
        cut = False
        renamed = False

        def do_cut(what: str) -> None:
            nonlocal cut
            cut = True
            notes.append(what)
            if rule.reset:
                reset_connection(scope)
            else:
                close_connection(scope)

        async def faulty_send(message: Message) -> None:
            nonlocal events, sent_bytes, renamed
            if cut or rule.after:
                return  # the response is replaced by the fault (after) or the connection is gone
            if message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            if rule.rename_op is not None and not renamed and _CONCAT_OP in body:
                renamed = True
                body = body.replace(_CONCAT_OP, b'"op": ' + wire.sse_json(rule.rename_op).encode(), 1)
                notes.append(f"renamed a delta op to {rule.rename_op}")
            if rule.cut_after_bytes is not None and sent_bytes + len(body) >= rule.cut_after_bytes:
                keep = rule.cut_after_bytes - sent_bytes
                await _throttled(send, body[:keep], rule.bytes_per_second)
                do_cut(f"cut after {rule.cut_after_bytes} bytes")
                return
            sent_bytes += len(body)
            await _throttled(send, body, rule.bytes_per_second, more_body=message.get("more_body", False))
            if rule.stream_cut_after is not None and body.startswith(b"event:"):
                events += 1
                if events >= rule.stream_cut_after:
                    do_cut(f"stream cut after {events} events")

        if rule.stream_cut_after == 0:
            original = faulty_send

            async def cut_at_start(message: Message) -> None:
                await original(message)
                if message["type"] == "http.response.start" and not cut:
                    do_cut("stream cut after 0 events")

            return cut_at_start
        return faulty_send


async def _throttled(send: Send, body: bytes, rate: float | None, *, more_body: bool = True) -> None:
    if not rate or not body:
        await send({"type": "http.response.body", "body": body, "more_body": more_body})
        return
    step = max(1, int(rate / 20))  # about 20 writes a second
    for start in range(0, len(body), step):
        piece = body[start : start + step]
        last = start + step >= len(body)
        await send({"type": "http.response.body", "body": piece, "more_body": more_body or not last})
        await asyncio.sleep(len(piece) / rate)


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *headers])
        await send(message)

    return wrapped


def _auth_problem(scope: Scope, api_key: str | None, scheme: str) -> str | None:
    header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    if header is None:
        return _MISSING_HEADER
    # The scheme is compared case-insensitively, as the gateway does (RFC 9110 section 11.1).
    name, _, rest = header.decode("latin-1").strip().partition(" ")
    if scheme == "snowflake":
        token = _SNOWFLAKE_TOKEN.fullmatch(rest.strip())
        if name.lower() != "snowflake" or token is None or not token.group(1):
            return _NOT_SNOWFLAKE
        return _BAD_KEY if api_key is not None and token.group(1) != api_key else None
    if name.lower() != "bearer":
        return _NOT_BEARER
    key = rest.strip()
    if not key.startswith("s4w_"):
        return _BAD_FORMAT
    if api_key is not None and key != api_key:
        return _BAD_KEY
    return None


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_bytes(send, status, wire.compact_json(body), b"application/json", headers or [])


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: bytes | None, headers: list[tuple[bytes, bytes]]
) -> None:
    raw = [(b"content-length", str(len(body)).encode()), *headers]
    if content_type is not None:
        raw.insert(0, (b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_fault(send: Send, rule: FaultRule) -> None:
    """The error answer of a rule, in the body style it asks for."""
    status = rule.status or 500
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    headers: list[tuple[bytes, bytes]] = []
    if rule.retry_after is not None:
        headers.append((b"retry-after", f"{rule.retry_after:g}".encode()))
    if rule.body == "envelope":
        await send_json(send, status, wire.envelope(status, rule.message or phrase, rule.code), headers)
    elif rule.body == "gateway":
        body = wire.gateway_envelope(rule.code or wire.code_for(status), rule.message or phrase)
        await send_json(send, status, body, headers)
    elif rule.body == "detail":
        await send_json(send, status, {"detail": rule.message or phrase}, headers)
    elif rule.body == "plain":
        text = rule.message or ("Proxy error" if status == 502 else phrase)
        await send_bytes(send, status, text.encode(), b"text/plain; charset=utf-8", headers)
    elif rule.body == "html":
        title = f"{status} {phrase}"
        page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        page += f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        await send_bytes(send, status, page.encode(), b"text/html", headers)
    else:
        await send_bytes(send, status, b"", None, headers)


def route_resolver(routes: list[tuple[str, frozenset[str], str]]) -> Callable[[Scope], str | None]:
    """The name of the API route a request reaches, for fault rules and the log.

    ``routes`` are (path template without prefix, methods, name); a path that matches with another method
    gives that route's name too (the request will get a 405 there).
    """
    table = [
        (re.compile(API_PREFIX + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"), methods, name)
        for path, methods, name in routes
    ]

    def resolve(scope: Scope) -> str | None:
        partial: str | None = None
        for pattern, methods, name in table:
            if pattern.match(scope["path"]):
                if scope["method"] in methods:
                    return name
                partial = partial or name
        return partial

    return resolve
