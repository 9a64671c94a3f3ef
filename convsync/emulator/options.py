"""The emulator's settings, fault rules and the records it keeps: plain frozen values, no HTTP here.

The switches cover what the spec marks UNKNOWN (pagination, parquet output, rate limits); a ``FaultRule``
describes one kind of misbehaviour of the network or the server, matched per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FrameNames = Literal["encode", "fail"]
AuthScheme = Literal["bearer", "snowflake"]
NextForm = Literal["token", "url", "path", "internal-url", "internal-path", "other-scheme"]
FaultBody = Literal["envelope", "gateway", "plain", "detail", "html", "empty"]
ListUpdatedAt = Literal["off", "on", "stale"]

_FRAME_NAMES = ("encode", "fail")
_AUTH_SCHEMES = ("bearer", "snowflake")
_NEXT_FORMS = ("token", "url", "path", "internal-url", "internal-path", "other-scheme")
_FAULT_BODIES = ("envelope", "gateway", "plain", "detail", "html", "empty")
_LIST_UPDATED_AT = ("off", "on", "stale")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One injected fault: which requests it matches and what happens to them.

    Matching: ``method`` (any when ``None``), ``path`` (a regex searched in the request path, e.g.
    ``r"/stream$"``) and ``route`` (a route name such as ``"stream_message"``; see docs/emulator.md). A
    matching request is hit with ``probability``; ``count`` limits the rule to its first N hits. The first
    rule that hits wins.

    Effects, combinable: ``latency`` seconds before anything happens; ``status`` answers with that status and
    a body in ``body`` style instead of handling the request (or after handling it when ``after`` is set, so
    the change did happen); ``reset`` ends the TCP connection with a RST instead of answering (after handling,
    with ``after``); ``stream_cut_after`` closes the connection after that many SSE events;
    ``cut_after_bytes`` closes it after that many body bytes (with ``reset``, both cuts are a RST);
    ``bytes_per_second`` throttles the response body. A cut stream cancels the agent run like a client
    disconnect does, unless ``finish_run`` lets it complete and commit. ``rename_op`` rewrites the op of the
    stream's first ``concat_string`` delta to that name (one op a client does not know).
    """

    method: str | None = None
    path: str | None = None
    route: str | None = None
    status: int | None = None
    body: FaultBody = "envelope"
    message: str | None = None
    code: str | None = None
    retry_after: float | None = None
    probability: float = 1.0
    count: int | None = None
    latency: float = 0.0
    after: bool = False
    reset: bool = False
    stream_cut_after: int | None = None
    cut_after_bytes: int | None = None
    bytes_per_second: float | None = None
    finish_run: bool = False
    rename_op: str | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            re.compile(self.path)
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.body not in _FAULT_BODIES:
            raise ValueError(f"body must be one of {_FAULT_BODIES}, got {self.body!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within 0..1, got {self.probability}")
        for name in ("count", "stream_cut_after", "cut_after_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        if self.bytes_per_second is not None and self.bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be > 0, got {self.bytes_per_second}")
        if self.after and self.status is None and not self.reset:
            raise ValueError("after=True needs status or reset")


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """Everything the emulator is told at start-up (``EmulatorServer.configure`` changes some at run time)."""

    api_key: str | None = "s4w_test-key"  # None: any key that starts with "s4w_"
    data_dir: Path | None = None  # None: state lives in a temp dir and is gone after close()
    tenant: str = "demo"
    seed_agents: tuple[str, ...] = ("Demo Agent",)
    parquet_output: bool = True
    page_size: int = 0  # > 0: lists page with next tokens
    next_form: NextForm = "token"
    rate_limit: int = 0  # requests per window before 429; 0 = off
    rate_window: float = 10.0
    ping_interval: float = 15.0
    chunk_delay: float = 0.0  # seconds between streamed deltas
    port: int = 0
    host: str = "127.0.0.1"
    chunk_size: int = 5  # characters per streamed text/thought delta
    auto_rename_named: bool = True  # the first sync message renames even conversations named at creation
    faults: tuple[FaultRule, ...] = ()
    admin_token: str | None = None  # None: the admin API under /_emulator needs no auth
    seed: int = 0  # seeds fault probabilities
    frame_row_cap: int = 100_000  # the data-frame slicer never returns more rows than this
    user_id: str = "a0c5f4d2-5f1e-4b8e-9d3c-0c1a2b3c4d5e"
    auth: bool = True  # False: no gateway auth at all (a local agent server)
    auth_scheme: AuthScheme = "bearer"  # "snowflake": Authorization: Snowflake Token="<key>"
    null_collections: bool = False  # empty lists (data, content, files, frames) are sent as null
    delete_no_content: bool = False  # DELETE of a conversation answers 204 without a body
    # A frame name that cannot be a Content-Disposition filename (not Latin-1, or control characters):
    # "encode" sends filename*=utf-8''…; "fail" answers 500 as the real server does when its header fails.
    hostile_frame_names: FrameNames = "encode"
    # The conversations list carries ``updated_at`` (not in the public API: a change hint some server may add):
    # "on" the time of the conversation's last message or change; "stale" always its creation time (a list
    # that does not announce new messages); "off" (the real server) no such key.
    list_updated_at: ListUpdatedAt = "off"

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.startswith("s4w_"):
            raise ValueError('api_key must start with "s4w_" (the gateway rejects other keys)')
        if not self.tenant or "/" in self.tenant:
            raise ValueError(f"tenant must be a non-empty path segment, got {self.tenant!r}")
        if self.auth_scheme not in _AUTH_SCHEMES:
            raise ValueError(f"auth_scheme must be one of {_AUTH_SCHEMES}, got {self.auth_scheme!r}")
        if self.hostile_frame_names not in _FRAME_NAMES:
            raise ValueError(f"hostile_frame_names must be one of {_FRAME_NAMES}, got {self.hostile_frame_names!r}")
        if self.list_updated_at not in _LIST_UPDATED_AT:
            raise ValueError(f"list_updated_at must be one of {_LIST_UPDATED_AT}, got {self.list_updated_at!r}")
        if self.next_form not in _NEXT_FORMS:
            raise ValueError(f"next_form must be one of {_NEXT_FORMS}, got {self.next_form!r}")
        if self.page_size < 0 or self.rate_limit < 0:
            raise ValueError("page_size and rate_limit must be >= 0")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be > 0")
        if self.ping_interval < 0 or self.chunk_delay < 0:
            raise ValueError("ping_interval and chunk_delay must be >= 0")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.frame_row_cap < 1:
            raise ValueError("frame_row_cap must be >= 1")
        object.__setattr__(self, "seed_agents", tuple(self.seed_agents))
        object.__setattr__(self, "faults", tuple(self.faults))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator saw (admin requests are not recorded). ``status`` 0: no response was sent."""

    method: str
    path: str
    status: int
    started: float  # time.time()
    finished: float
    query: str = ""
    route: str | None = None
    fault: str | None = None  # what an injected fault did, if one hit
    last_event: str | None = None  # a stream's last event_type sent (agent_finished: read to the end)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One text delta of an agent reply as the stream handed it to the connection."""

    message_id: str
    text: str
    emitted: float  # time.time()
    conversation_id: str = ""


@dataclass(slots=True)
class FaultState:
    """A rule plus how often it has hit (mutable: owned by the fault table under its lock)."""

    rule: FaultRule
    hits: int = 0
    exhausted: bool = field(default=False)
