"""The Agent API client: every route of spec §3 over one thread-safe ``httpx.Client``.

Every public method returns typed models (``convsync.api.models``) and raises only ``convsync.errors``:

================================  ===========================================================================
what happened                     raised
================================  ===========================================================================
connect failure, timeout, reset   ``TransientError`` (status 0)
5xx, 408, a plain-text 502        ``TransientError`` (with the status)
429                               ``RateLimited`` with ``retry_after`` from ``Retry-After`` or ``RateLimit``
401, 403                          ``AuthError``
404                               ``NotFound``
other 4xx (400, 409, 422, …)      ``BadRequest`` (``code`` from the envelope, e.g. ``unprocessable_entity``)
2xx that is not the JSON we need  ``ProtocolError``
reply stream cut before the end   ``StreamInterrupted``
================================  ===========================================================================

Retries. Requests that are safe to repeat (GET; DELETE, see below) are retried on transient failures with
exponential backoff and full jitter, up to ``max_retries`` times, honouring ``Retry-After``. A POST is retried
only when nothing of it reached the server: the connection could not be made (``httpx.ConnectError``,
``ConnectTimeout``, ``PoolTimeout``) or the gateway answered 429, which it does before forwarding. Any other
``TransientError`` from a POST (``create_conversation``, ``post_message``, ``stream_message``,
``upload_files``) means *the request may have been applied*: the caller must look before resending.

DELETE is idempotent in effect: when an attempt may have deleted the conversation but its answer was lost,
the retry gets 404. ``delete_conversation`` then reports success (a ``Conversation`` with the ids and an empty
name), because the state the caller asked for is reached. A 404 on the first attempt is ``NotFound``.

Rate limit. All threads using one client share one sliding-window limiter (default 30 requests / 10 s, well
under the self-hosted gateway's 50 / 10 s); a request over the limit waits, it does not fail. Requests go in
lanes (``convsync.api.ratelimit``, set by the caller with ``request_lane``): interactive ones first, polls within
their share of the window. A 429 pauses the limiter for everyone for the server's ``Retry-After``.

Timeouts. Connecting: ``connect_timeout`` (10 s). Ordinary requests: ``timeout`` per read/write. The
synchronous ``post_message`` waits up to ``run_timeout`` for the answer (the call lasts as long as the agent
runs). A reply stream may be idle up to ``stream_idle_timeout`` between bytes (the server pings every 15 s).
Uploads and downloads apply ``timeout`` to each chunk, never to the whole transfer.

Secrets. The API key is sent only in the ``Authorization`` header, only to the base URL's origin (a
pagination ``next`` URL naming another origin is followed on ours), and never appears in an exception message
or a repr.

Redirects. Only a GET's redirect within the base URL's origin (same scheme, host and port) is followed. Any
other redirect raises ``RedirectRefused`` before anything is sent to its target: another origin (an https →
http downgrade included) would get the request where the user did not point convsync, and a redirected POST
would re-send its body (307/308: a prompt, an upload) or turn into a GET whose answer would pass for the
POST's (301-303). A TLS certificate that fails verification raises ``UntrustedCertificate``, whose message
names the config keys that fix it (``convsync.trust``).
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import quote

import httpx

from convsync import killpoints
from convsync.api.models import (
    Agent,
    Conversation,
    DataFrameInfo,
    Message,
    RemoteFile,
    StreamEvent,
)

if TYPE_CHECKING:
    from convsync.config import Config
from convsync.api.ratelimit import SlidingWindowLimiter
from convsync.api.retry import Backoff, retry_after_seconds
from convsync.api.stream import stream_events
from convsync.errors import (
    ApiError,
    AuthError,
    BadRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    RedirectRefused,
    StreamInterrupted,
    TransientError,
    UntrustedCertificate,
)
from convsync.trust import tls_failure_fix

# Called with (bytes done, bytes total) while a transfer runs; total is 0 when unknown.
Progress = Callable[[int, int], None]

# Reads and writes of file bodies: big enough for throughput, small enough that memory stays flat.
CHUNK_SIZE = 1024 * 1024
# A server that keeps answering with another page forever is a bug, not a long list.
MAX_PAGES = 10_000
# Error bodies are read for their message only; a huge one is cut.
MAX_ERROR_BODY = 64 * 1024
URL_CACHE_SIZE = 16_384  # URLs kept by ``AgentClient._url`` (a few per conversation)

# How the key is sent (spec §1): ``Authorization: Bearer <key>`` (the gateway), ``Snowflake Token="<key>"``
# (Snowflake-hosted deployments), or nothing at all (a local agent server, e.g. a desktop Studio's).
AuthScheme = Literal["bearer", "snowflake", "none"]
AUTH_SCHEMES: tuple[AuthScheme, ...] = ("bearer", "snowflake", "none")

# These failures happen before any byte of the request left: repeating them cannot apply a request twice.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` requests in any ``per_seconds`` window (client side)."""

    requests: int = 30
    per_seconds: float = 10.0
    background_share: float = 0.5  # polls and re-checks (``Lane.BACKGROUND``) use at most this share


class _Secret:
    """Holds the API key so that no repr, log or ``vars()`` dump shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


class AgentClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        auth: AuthScheme = "bearer",
        timeout: float = 30.0,
        verify: bool | str = True,
        use_truststore: bool = False,
        rate_limit: RateLimit | None = RateLimit(),
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        connect_timeout: float = 10.0,
        run_timeout: float | None = 1800.0,
        stream_idle_timeout: float = 120.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """A client of the API at ``base_url`` (e.g. ``https://host/tenants/T/api/v2``; a final ``/`` is ok).

        ``verify``: ``True`` (default CAs), ``False``, or the path of a CA bundle file or directory, which
        then replaces the default CAs. ``use_truststore``: verify with the operating system's trust store
        (needs the ``truststore`` extra); a CA path in ``verify`` is added to it. ``transport`` replaces the
        network (tests pass ``httpx.MockTransport``). ``clock``/``sleep`` drive the rate limiter and backoff
        (tests pass fakes).
        ``rate_limit=None`` turns the client-side limiter off. ``auth``: how the key is sent (``AuthScheme``);
        with ``"none"`` no ``Authorization`` header is sent and ``api_key`` may be empty.
        """
        url = httpx.URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("the base URL must be an http(s) URL with a host, e.g. https://host/tenants/T/api/v2")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self._origin = url.copy_with(raw_path=b"/", query=None, fragment=None, username=None, password=None)
        self._base_path = url.path.rstrip("/")
        self._urls: dict[tuple[str, ...], httpx.URL] = {}  # _url's answers: building an httpx.URL costs more
        self.base_url = str(self._origin).rstrip("/") + self._base_path
        self.last_response: float | None = None  # wall time of the server's last answer (the daemon's heartbeat)
        self._key = _Secret(api_key)
        self.max_retries = max_retries
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._limiter = (
            SlidingWindowLimiter(
                rate_limit.requests,
                rate_limit.per_seconds,
                background_share=rate_limit.background_share,
                clock=clock,
                sleep=sleep,
            )
            if rate_limit is not None
            else None
        )
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._run_timeout = httpx.Timeout(timeout, connect=connect_timeout, read=run_timeout)
        self._stream_timeout = httpx.Timeout(timeout, connect=connect_timeout, read=stream_idle_timeout)
        # The server stores and hashes an upload after its last byte: allow it a while before answering.
        self._upload_timeout = httpx.Timeout(
            timeout, connect=connect_timeout, read=max(timeout, stream_idle_timeout, 300.0)
        )
        self._http = httpx.Client(
            headers=_auth_headers(auth, api_key),
            timeout=self._timeout,
            verify=_tls_verify(verify, use_truststore),
            transport=transport,
            follow_redirects=True,
            event_hooks={"response": [self._vet_redirect]},  # runs before httpx follows a redirect
        )

    @classmethod
    def from_config(cls, config: Config, *, max_retries: int = 2) -> AgentClient:
        """The client a configuration describes (TLS, rate limit, timeouts); the one way daemon and doctor build it.

        ``verify_tls: false`` turns verification off whatever ``ca_bundle`` says; otherwise a bundle replaces
        the default CAs.
        """
        verify: bool | str = False
        if config.verify_tls:
            verify = str(config.ca_bundle) if config.ca_bundle is not None else True
        return cls(
            config.url,
            config.api_key,
            auth=config.auth,
            timeout=config.timeout_seconds,
            verify=verify,
            use_truststore=config.use_truststore,
            rate_limit=RateLimit(
                config.rate_limit_requests, config.rate_limit_window_seconds, config.rate_limit_background_share
            ),
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return f"AgentClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- agents and conversations ---------------------------------------------------------------------------

    def list_agents(self, name: str | None = None) -> list[Agent]:
        """Every agent the key may see; ``name`` keeps those whose name starts with it (case-insensitive)."""
        params = {"name": name} if name else {}
        agents = [Agent.from_wire(item) for item in self._paginate(self._url("agents"), params)]
        if name:  # servers that ignore the filter get it applied here
            agents = [a for a in agents if a.name.casefold().startswith(name.casefold())]
        return agents

    def get_agent(self, aid: str) -> Agent:
        return Agent.from_wire(self._get_json(self._url("agents", aid)))

    def list_conversations(self, aid: str) -> list[Conversation]:
        """The agent's conversations, newest first (as the server orders them)."""
        url = self._url("agents", aid, "conversations")
        return [Conversation.from_wire(item, agent_id=aid) for item in self._paginate(url, {})]

    def create_conversation(self, aid: str, name: str) -> Conversation:
        response = self._request(
            "POST", self._url("agents", aid, "conversations"), json_body={"name": name}, safe=False
        )
        created = Conversation.from_wire(_json(response), agent_id=aid)
        killpoints.reached("create.answered")
        return created

    def delete_conversation(self, aid: str, cid: str) -> Conversation:
        """Delete a conversation and its files (a retried delete that finds 404: see the module docstring).

        Any 2xx is success; when the answer is not the deleted conversation (``204 No Content``, an empty or
        other body), the result carries the ids and an empty name.
        """
        response = self._request(
            "DELETE", self._url("agents", aid, "conversations", cid), safe=True, gone_after_retry_ok=True
        )
        gone = Conversation(id=cid, name="", agent_id=aid)
        if response.status_code == 404 or not response.content.strip():
            return gone
        try:
            return Conversation.from_wire(json.loads(response.content), agent_id=aid)
        except (ValueError, ProtocolError):
            return gone

    # --- messages -------------------------------------------------------------------------------------------

    def get_messages(self, aid: str, cid: str) -> list[Message]:
        """The whole history, oldest first."""
        url = self._url("agents", aid, "conversations", cid, "messages")
        return [Message.from_wire(item) for item in self._paginate(url, {})]

    def post_message(self, aid: str, cid: str, content: str) -> list[Message]:
        """Send ``content`` and wait for the agent's run; returns the whole history (the server's answer).

        Blocks as long as the agent runs (up to ``run_timeout``). Never retried once it may have been sent.
        """
        url = self._url("agents", aid, "conversations", cid, "messages")
        response = self._request("POST", url, json_body={"content": content}, safe=False, timeout=self._run_timeout)
        items = self._paginate(url, {}, first=_json(response))
        return [Message.from_wire(item) for item in items]

    def stream_message(
        self, aid: str, cid: str, content: str, *, stop: Callable[[], bool] | None = None
    ) -> Iterator[StreamEvent]:
        """Send ``content`` and yield the reply as typed events, ending with ``StreamFinished``.

        A generator: the request goes out on the first ``next()``; closing the generator early closes the
        connection (the server then cancels the run, so the reply may never be stored). A body that ends, or
        a connection that breaks or idles past ``stream_idle_timeout``, before ``agent_finished`` raises
        ``StreamInterrupted``: the prompt reached the server, the reply may or may not be complete there.
        ``stop`` is asked after every piece of the body, keep-alive pings included: when it says so, reading
        ends there (``StreamInterrupted``), so a caller can stop a reply that is silent for a long time.
        """
        url = self._url("agents", aid, "conversations", cid, "stream")
        response = self._request(
            "POST",
            url,
            json_body={"content": content},
            headers={"Accept": "text/event-stream"},
            safe=False,
            stream=True,
            timeout=self._stream_timeout,
        )
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                raise ProtocolError(f"POST {url.path}: the answer is JSON, not an event stream", status=200)
            chunks = self._body(response, "POST", url, StreamInterrupted)
            yield from stream_events(chunks if stop is None else _until(chunks, stop))
        finally:
            response.close()

    # --- files ----------------------------------------------------------------------------------------------

    def list_files(self, aid: str, cid: str) -> list[RemoteFile]:
        url = self._url("agents", aid, "conversations", cid, "files")
        return [RemoteFile.from_wire(item) for item in self._paginate(url, {})]

    def upload_files(
        self, aid: str, cid: str, files: Sequence[tuple[str, Path]], progress: Progress | None = None
    ) -> list[RemoteFile]:
        """Upload ``(name, path)`` pairs in one multipart request (field ``files`` repeated).

        Each file is streamed from disk in ``CHUNK_SIZE`` reads, so memory stays flat whatever its size; a
        file that changes size while it is sent raises ``TransientError``. ``progress(done, total)`` counts
        file bytes. A name that exists replaces the earlier file on the server.
        """
        if not files:
            return []
        body = _MultipartBody(files, progress)
        url = self._url("agents", aid, "conversations", cid, "files")
        response = self._request(
            "POST",
            url,
            content=body.chunks,
            headers=body.headers,
            safe=False,
            timeout=self._upload_timeout,
        )
        return [RemoteFile.from_wire(item) for item in self._paginate(url, {}, first=_json(response))]

    def download_file(self, aid: str, cid: str, file_ref: str, out: BinaryIO, progress: Progress | None = None) -> int:
        """Stream the file's bytes into ``out``; return how many were written.

        If the connection breaks mid-body and ``out`` is seekable, ``out`` is rewound and truncated to where
        it started and the download starts over (up to ``max_retries`` times).
        """
        # The route is declared with the trailing slash ([openapi]).
        url = self._url("agents", aid, "conversations", cid, "files", "download")
        url = url.copy_with(raw_path=url.raw_path + b"/")
        return self._download(url, {"file_ref": file_ref}, out, progress)

    # --- data frames ----------------------------------------------------------------------------------------

    def list_data_frames(self, aid: str, cid: str, num_samples: int = 0) -> list[DataFrameInfo]:
        """The conversation's data frames with up to ``num_samples`` sample rows each (-1: all rows)."""
        url = self._url("agents", aid, "conversations", cid, "data-frames")
        items = self._paginate(url, {"num_samples": str(num_samples)})
        return [DataFrameInfo.from_wire(item) for item in items]

    def get_data_frame_rows(
        self,
        aid: str,
        cid: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        column_names: Sequence[str] | None = None,
        order_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows as records (``{column: value}``): sorted by ``order_by`` (``-col`` descending), then the
        chosen columns, then ``[offset : offset + limit]``. ``limit=None`` is the server's default (1000);
        ``-1`` is every row.
        """
        params = _frame_params(offset, limit, column_names, order_by, "json")
        body = self._get_json(self._url("agents", aid, "conversations", cid, "data-frames", name), params)
        return _records(body)

    def download_data_frame_parquet(
        self,
        aid: str,
        cid: str,
        name: str,
        out: BinaryIO,
        progress: Progress | None = None,
        *,
        offset: int = 0,
        limit: int = -1,
    ) -> int:
        """Stream rows ``[offset : offset + limit]`` of the frame as Parquet into ``out``; return the bytes.

        ``limit=-1`` asks for every row, but the server's slicer caps one answer at 100000 rows: a bigger
        frame comes in pages (``offset``/``limit``), each a Parquet file of its own.
        A server with Parquet output switched off answers 422: that raises ``BadRequest`` with
        ``code == "unprocessable_entity"`` (status 422), so a caller can fall back to ``get_data_frame_rows``.
        """
        url = self._url("agents", aid, "conversations", cid, "data-frames", name)
        params = _frame_params(offset, limit, None, None, "parquet")
        return self._download(url, params, out, progress)

    # --- plumbing -------------------------------------------------------------------------------------------

    def _vet_redirect(self, response: httpx.Response) -> None:
        """Let httpx follow a GET's redirect within the base URL's origin; refuse any other before it is sent."""
        if not response.has_redirect_location:
            return
        request = response.request
        try:
            target: httpx.URL | None = request.url.join(response.headers["location"])
        except httpx.InvalidURL:
            target = None
        if target is not None and request.method == "GET" and _origin_of(target) == _origin_of(self._origin):
            return
        if target is None:
            where, fix = "an invalid address", "the server is misconfigured; check server.url"
        else:
            # No query: a signed URL's token is not for logs.
            where = str(target.copy_with(query=None, fragment=None, username=None, password=None))
            if _origin_of(target) != _origin_of(self._origin):
                fix = (
                    f"convsync follows no redirect to another origin than {str(self._origin).rstrip('/')}; "
                    "server.url is probably wrong: if that server is the right one, set server.url to its "
                    "API base URL"
                )
            else:
                fix = (
                    "convsync never re-sends a request body to a redirect; server.url is probably wrong "
                    "(a missing or extra path part?)"
                )
        raise RedirectRefused(
            self._redact(
                f"{request.method} {request.url.path}: the server redirected it ({response.status_code}) to "
                f"{where}; not followed. Fix: {fix}"
            ),
            status=response.status_code,
        )

    def _url(self, *segments: str) -> httpx.URL:
        """The base URL plus path segments, each percent-encoded whole (a ``/`` in a name stays data)."""
        cached = self._urls.get(segments)
        if cached is not None:
            return cached
        for segment in segments:
            # "." and ".." survive percent-encoding as path steps: a name like that would address another route.
            if segment in ("", ".", ".."):
                raise BadRequest(f"{segment!r} cannot be used as a name in a URL path", code="bad_request")
        path = self._base_path + "".join("/" + quote(segment, safe="") for segment in segments)
        url = self._origin.copy_with(raw_path=path.encode("ascii"))
        if len(self._urls) >= URL_CACHE_SIZE:  # polls ask for the same few URLs per conversation, again and again
            self._urls.clear()
        self._urls[segments] = url
        return url

    def _with_params(self, url: httpx.URL, params: Mapping[str, str]) -> httpx.URL:
        # Parameters already in the URL (a followed ``next`` URL) win over ours.
        missing = {k: v for k, v in params.items() if k not in url.params}
        return url.copy_merge_params(missing) if missing else url

    def _get_json(self, url: httpx.URL, params: Mapping[str, str] | None = None) -> Any:
        return _json(self._request("GET", self._with_params(url, params or {}), safe=True))

    def _paginate(self, url: httpx.URL, params: Mapping[str, str], first: Any = None) -> Iterator[Any]:
        """The items of a list route, following ``next`` as a token or as a URL/path.

        Liberal about the shape: a bare JSON array is a whole list; ``{"data": [...]}`` is a page; a missing
        or ``null`` collection (the body, or its ``data``) is an empty one. Stops when ``has_more`` is false
        or ``next`` is empty; a ``next`` seen before raises ``ProtocolError`` rather than loop.
        """
        body = first if first is not None else self._get_json(url, params)
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            if body is None:
                return
            if isinstance(body, list):
                yield from body
                return
            if not isinstance(body, dict):
                raise ProtocolError(f"expected a list or a page object from {url.path}")
            data = body.get("data")
            if data is None:
                data = body.get("messages") or []
            if not isinstance(data, list):
                raise ProtocolError(f"the 'data' of the page from {url.path} is not a list")
            yield from data
            token = body.get("next")
            if not token or body.get("has_more") is False:
                return
            if not isinstance(token, str):
                token = str(token)
            if token in seen:
                raise ProtocolError(f"the server repeated the pagination token of {url.path}")
            seen.add(token)
            try:
                target, next_params = self._next_page(url, params, token)
            except (httpx.InvalidURL, ValueError) as exc:  # a control character, raw non-ASCII in a path…
                raise ProtocolError(f"the pagination 'next' of {url.path} is not a usable address") from exc
            body = self._get_json(target, next_params)
        raise ProtocolError(f"more than {MAX_PAGES} pages from {url.path}")

    def _next_page(self, url: httpx.URL, params: Mapping[str, str], token: str) -> tuple[httpx.URL, Mapping[str, str]]:
        """Where the page after ``token`` is, always on the configured origin (the key goes nowhere else).

        A URL (on any host or scheme: a server behind a gateway may name itself) or a path gives its path and
        query; so does a relative reference (``?next=…``, ``page?next=…``). Anything else is an opaque token,
        passed as ``?next=token``.
        """
        if token.lower().startswith(("http://", "https://")):
            raw = httpx.URL(token).raw_path
        elif token.startswith("/"):
            raw = token.encode()
        elif token.startswith("?") or ("?" in token and "=" not in token.partition("?")[0]):
            raw = url.join(token).raw_path
        else:
            return url, {**params, "next": token}
        path, _, query = raw.partition(b"?")
        target = self._origin.copy_with(raw_path=self._list_path(url, path) + (b"?" + query if query else b""))
        return target, params

    def _list_path(self, url: httpx.URL, path: bytes) -> bytes:
        """The path on our base that a ``next`` path means: the list's own path when it ends with the list's
        route (the server may name its own prefix, e.g. ``/api/public/v1``), else a path under the base."""
        own = url.raw_path.partition(b"?")[0]
        base = self._base_path.encode()
        route = own[len(base) :]
        found = path.rstrip(b"/") or b"/"
        if found == own or (route and found.endswith(route)):
            return own
        if base and (found == base or found.startswith(base + b"/")):
            return found
        return base + found

    def _request(
        self,
        method: str,
        url: httpx.URL,
        *,
        safe: bool,
        json_body: Any = None,
        content: Callable[[], Iterable[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
        gone_after_retry_ok: bool = False,
    ) -> httpx.Response:
        """Send one request with rate limiting and retries; return a 2xx response or raise ``ApiError``.

        ``safe``: the request may be repeated after it reached the server. ``content`` makes a fresh body per
        attempt. With ``stream=True`` the caller reads and closes the response. ``gone_after_retry_ok``
        returns a 404 response instead of raising when an earlier attempt may have been applied (DELETE).
        """
        attempt = 0
        maybe_applied = False
        while True:
            if self._limiter is not None:
                self._limiter.acquire()  # in the caller's lane (``ratelimit.request_lane``)
            request = self._http.build_request(
                method,
                url,
                content=None if content is None else content(),
                json=json_body,
                headers=headers,
                timeout=timeout or self._timeout,
            )
            retry_after: float | None = None
            try:
                response = self._http.send(request, stream=stream)
                self.last_response = time.time()  # the server answered (whatever it said)
            except httpx.TransportError as exc:
                error: ApiError = self._transport_error(exc, method, url)
                nothing_sent = isinstance(exc, _NOTHING_SENT)
                maybe_applied = maybe_applied or not nothing_sent
                if not ((safe or nothing_sent) and _worth_retrying(exc)) or attempt >= self.max_retries:
                    raise error from exc
            except httpx.TooManyRedirects as exc:
                raise ProtocolError(self._redact(f"{method} {url.path}: too many redirects")) from exc
            else:
                if response.is_success:
                    return response
                if response.status_code == 404 and gone_after_retry_ok and maybe_applied:
                    _read_bounded(response)
                    return response
                error = self._status_error(response, method, url)
                if isinstance(error, RateLimited):
                    # The gateway refuses before forwarding: nothing was applied, any method may repeat.
                    retry_after = error.retry_after
                    if self._limiter is not None and retry_after:
                        # Capped: threads asleep in the limiter can't be stopped, and the error says the rest.
                        self._limiter.pause(min(retry_after, self._backoff.max_wait))
                elif isinstance(error, TransientError):
                    maybe_applied = True
                    retry_after = retry_after_seconds(response.headers)
                    if not safe:
                        raise error
                else:
                    raise error
                if attempt >= self.max_retries:
                    raise error
            delay = self._backoff.delay(attempt, retry_after)
            if delay is None:  # the server wants a longer pause than we sleep through
                raise error
            self._sleep(delay)
            attempt += 1

    def _download(self, url: httpx.URL, params: Mapping[str, str], out: BinaryIO, progress: Progress | None) -> int:
        start = out.tell() if out.seekable() else None
        target = self._with_params(url, params)
        attempt = 0
        while True:
            response = self._request("GET", target, safe=True, stream=True)
            try:
                total = _content_length(response)
                done = 0
                for chunk in self._body(response, "GET", target, TransientError):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                return done
            except TransientError:
                if start is None or attempt >= self.max_retries:
                    raise
                out.seek(start)
                out.truncate()
                self._sleep(self._backoff.delay(attempt) or 0.0)
                attempt += 1
            finally:
                response.close()

    def _body(
        self, response: httpx.Response, method: str, url: httpx.URL, error: type[TransientError]
    ) -> Iterator[bytes]:
        """The response body in chunks; a transport failure mid-body becomes ``error``."""
        try:
            yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise error(self._redact(f"{method} {url.path}: the body broke off: {_describe(exc)}")) from exc

    def _transport_error(self, exc: httpx.TransportError, method: str, url: httpx.URL) -> ApiError:
        if _tls_verification_failed(exc):
            return UntrustedCertificate(
                self._redact(
                    f"{method} {url.path}: TLS certificate verification failed ({_describe(exc)}). "
                    f"Fix: {tls_failure_fix(_verify_code(exc))}"
                )
            )
        return TransientError(self._redact(f"{method} {url.path}: {_describe(exc)}"))

    def _status_error(self, response: httpx.Response, method: str, url: httpx.URL) -> ApiError:
        status = response.status_code
        code, message, error_id = _error_details(response)
        text = self._redact(f"{method} {url.path}: {message}")
        if status == 429:
            retry_after = retry_after_seconds(response.headers)
            return RateLimited(text, retry_after=retry_after, code=code, error_id=error_id)
        cls: type[ApiError]
        if status in (401, 403):
            cls = AuthError
        elif status == 404:
            cls = NotFound
        elif status == 408 or status >= 500:
            cls = TransientError
        elif 400 <= status < 500:
            cls = BadRequest
        else:  # 1xx/3xx that redirects did not resolve
            cls = ProtocolError
        return cls(text, status=status, code=code, error_id=error_id)

    def _redact(self, text: str) -> str:
        key = self._key.value
        return text.replace(key, "<secret>") if key else text


# --- helpers without state ----------------------------------------------------------------------------------


def _auth_headers(auth: AuthScheme, api_key: str) -> dict[str, str]:
    if auth == "bearer":
        return {"Authorization": f"Bearer {api_key}"}
    if auth == "snowflake":
        return {"Authorization": f'Snowflake Token="{api_key}"'}
    if auth == "none":
        return {}
    raise ValueError(f"auth must be one of {AUTH_SCHEMES}, got {auth!r}")


def _tls_verify(verify: bool | str, use_truststore: bool) -> bool | ssl.SSLContext:
    if use_truststore:
        import truststore  # an optional extra, loaded only when asked for

        context: ssl.SSLContext = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if isinstance(verify, str):
            _load_cas(context, verify)
        return context
    if isinstance(verify, str):
        # Like requests and curl: a bundle given explicitly replaces the default CAs.
        path = Path(verify).expanduser()
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    return verify


def _load_cas(context: ssl.SSLContext, location: str) -> None:
    path = Path(location).expanduser()
    if path.is_dir():
        context.load_verify_locations(capath=str(path))
    else:
        context.load_verify_locations(cafile=str(path))


def _describe(exc: httpx.TransportError) -> str:
    """A transport failure in words: its kind, and its text when it has one (never request headers)."""
    detail = str(exc).strip()
    kinds: dict[type[httpx.TransportError], str] = {
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout",
        httpx.PoolTimeout: "no free connection in time",
        httpx.ConnectError: "cannot connect",
        httpx.ReadError: "connection broken while reading",
        httpx.WriteError: "connection broken while writing",
        httpx.RemoteProtocolError: "the server broke the HTTP protocol",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    return f"{kind}: {detail}" if detail else kind


def _tls_verification_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _verify_code(exc: BaseException) -> int | None:
    """OpenSSL's verify result (``X509_V_ERR_*``) behind a TLS failure, when it is known."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_code
        seen = seen.__cause__ or seen.__context__
    return None


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)  # httpx leaves the port None when it is the scheme's default


def _worth_retrying(exc: httpx.TransportError) -> bool:
    # A bad URL scheme or a TLS trust failure will fail the same way next time.
    return not isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError) and not (
        _tls_verification_failed(exc)
    )


def _read_bounded(response: httpx.Response) -> bytes:
    """Up to ``MAX_ERROR_BODY`` bytes of a (possibly streamed) response body; closes the response."""
    if not response.is_stream_consumed:
        try:
            if response.is_closed:
                return response.content[:MAX_ERROR_BODY]
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_ERROR_BODY:
                    break
            return b"".join(chunks)[:MAX_ERROR_BODY]
        except httpx.HTTPError:
            return b""
        finally:
            response.close()
    try:
        return response.content[:MAX_ERROR_BODY]
    except httpx.ResponseNotRead:
        return b""


_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _error_details(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """``(code, message, error_id)`` from any error body: the envelope with or without ``error_id``,
    FastAPI's ``{"detail": …}``, ``{"message": …}``, plain text (a proxy's ``Proxy error``) or HTML."""
    raw = _read_bounded(response)
    fallback = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = _opt(error.get("code"))
            message = _opt(error.get("message")) or _opt(error.get("details")) or fallback
            return code, message, _opt(error.get("error_id"))
        if isinstance(error, str) and error:
            return _opt(body.get("code")), error, None
        detail = body.get("detail")
        if detail is not None:
            return None, _detail_text(detail) or fallback, None
        plain_message = _opt(body.get("message"))
        if plain_message:
            return _opt(body.get("code")), plain_message, None
    if text and body is None:
        title = _TITLE.search(text)
        plain = " ".join((title.group(1) if title else _TAG.sub(" ", text)).split())
        if plain:
            return None, plain[:300], None
    return None, fallback, None


def _detail_text(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or validation errors joined as ``loc -> loc: msg; …``."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = item.get("loc")
                where = " -> ".join(str(x) for x in loc) if isinstance(loc, list) else ""
                msg = str(item.get("msg", ""))
                parts.append(f"{where}: {msg}" if where else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)[:300]


def _opt(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:
        kind = response.headers.get("content-type", "no content type")
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON ({kind})",
            status=response.status_code,
        ) from exc


def _records(body: Any) -> list[dict[str, Any]]:
    """Data-frame rows as records; the ``{"columns": [...], "rows": [[...]]}`` shape of some mocks too."""
    if isinstance(body, dict):
        columns, rows = body.get("columns"), body.get("rows")
        if isinstance(columns, list) and isinstance(rows, list):
            names = [str(c) for c in columns]
            return [dict(zip(names, row, strict=False)) for row in rows if isinstance(row, list)]
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        raise ProtocolError("data-frame rows must be a list of objects")
    return body


def _frame_params(
    offset: int,
    limit: int | None,
    column_names: Sequence[str] | None,
    order_by: str | None,
    output_format: str,
) -> dict[str, str]:
    params = {"offset": str(offset), "output_format": output_format}
    if limit is not None:
        params["limit"] = str(limit)
    if column_names:
        params["column_names"] = ",".join(column_names)
    if order_by:
        params["order_by"] = order_by
    return params


def _content_length(response: httpx.Response) -> int:
    """The body's length when the server said it (and no content coding changes it), else 0."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return 0
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


# --- multipart upload ---------------------------------------------------------------------------------------


def _form_quote(value: str) -> str:
    """A filename as a quoted-string: ``\\`` and ``"`` backslash-escaped, control characters percent-encoded.

    The server parses the header with python-multipart (Starlette), which undoes backslash escapes, so any
    name round-trips exactly; HTML5's ``%22`` for a quote would arrive literally. Line breaks can't appear
    raw in a header, so they (and other control characters) are percent-encoded like browsers do.
    """
    out = []
    for ch in value:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


class _MultipartBody:
    """A ``multipart/form-data`` body of files read from disk chunk by chunk, with a known length.

    ``chunks()`` starts a fresh pass (one per attempt). The length is computed from the files' sizes up front
    so the request carries ``Content-Length`` (no chunked upload, which some proxies refuse).
    """

    def __init__(self, files: Sequence[tuple[str, Path]], progress: Progress | None) -> None:
        self.boundary = os.urandom(16).hex()
        self.progress = progress
        self.parts: list[tuple[bytes, Path, int]] = []
        for name, path in files:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            head = (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="files"; filename="{_form_quote(name)}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            self.parts.append((head, Path(path), Path(path).stat().st_size))
        self.tail = f"--{self.boundary}--\r\n".encode()
        self.file_bytes = sum(size for _, _, size in self.parts)
        length = sum(len(head) + size + 2 for head, _, size in self.parts) + len(self.tail)
        self.headers = {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    def chunks(self) -> Iterator[bytes]:
        done = 0
        for head, path, size in self.parts:
            yield head
            with path.open("rb") as handle:
                remaining = size
                while remaining:
                    chunk = handle.read(min(CHUNK_SIZE, remaining))
                    if not chunk:
                        raise TransientError(f"{path.name} shrank while it was being uploaded")
                    remaining -= len(chunk)
                    done += len(chunk)
                    yield chunk
                    if self.progress is not None:
                        self.progress(done, self.file_bytes)
                if handle.read(1):
                    raise TransientError(f"{path.name} grew while it was being uploaded")
            yield b"\r\n"
        yield self.tail


def _until(chunks: Iterable[bytes], stop: Callable[[], bool]) -> Iterator[bytes]:
    """``chunks`` until ``stop()`` says so (asked after each one)."""
    for chunk in chunks:
        yield chunk
        if stop():
            return
