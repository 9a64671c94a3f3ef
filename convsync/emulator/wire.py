"""Byte-level details of the wire that both the REST routes and the stream share.

The vendor's server answers with ``ORJSONResponse`` (compact, UTF-8, no spaces), writes REST timestamps as
pydantic does (``Z``), SSE timestamps with ``isoformat()`` (``+00:00``) and SSE data with ``json.dumps``
default spacing.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

# Error codes per status (spec 2.5); other 5xx statuses read as internal errors.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "unexpected",
}

DELTA_EPOCH = "1970-01-01T00:00:00+00:00"  # current servers normalise message timestamps inside deltas

_TIMESTAMP_KEYS = frozenset({"created_at", "updated_at", "discovered_at", "pending_at", "started_at", "ended_at"})


class ApiFault(Exception):
    """An error answer of the API: rendered as the error envelope with a fresh ``error_id``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or code_for(status)


def code_for(status: int) -> str:
    if status in ERROR_CODES:
        return ERROR_CODES[status]
    return "internal_error" if status >= 500 else "bad_request"


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def stable_id(text: str) -> str:
    """A UUID4-shaped id derived from ``text``: seeded agents keep their id across fresh emulators."""
    return str(uuid.UUID(bytes=hashlib.sha256(text.encode()).digest()[:16], version=4))


def rest_time(moment: datetime) -> str:
    """Pydantic's rendering: ISO-8601, micro-seconds unless zero, ``Z`` for UTC."""
    text = moment.astimezone(UTC).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def sse_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def parse_time(text: str) -> datetime:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def compact_json(content: Any) -> bytes:
    """What ``orjson.dumps`` produces for the objects the emulator sends: no spaces, UTF-8, NaN as null."""
    return json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def sse_json(payload: Any) -> str:
    """SSE ``data:`` payloads are ``json.dumps`` with its default spacing and ASCII escapes."""
    return json.dumps(payload)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def envelope(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The agent server's error body."""
    return {"error": {"error_id": new_id(), "code": code or code_for(status), "message": message}}


def gateway_envelope(code: str, message: str) -> dict[str, Any]:
    """The self-hosted gateway's error body: same shape, no ``error_id``."""
    return {"error": {"code": code, "message": message}}


def to_rest(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored message (``+00:00`` timestamps) as the REST routes render it (``Z``)."""
    out: dict[str, Any] = {}
    for key, value in stored.items():
        if key in _TIMESTAMP_KEYS and isinstance(value, str):
            out[key] = rest_time(parse_time(value))
        elif key == "content" and isinstance(value, list):
            out[key] = [to_rest(part) if isinstance(part, dict) else part for part in value]
        else:
            out[key] = value
    return out
