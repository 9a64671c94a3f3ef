"""Test-local SSE reading and JSON-Patch application, written from the spec (not the client's code)."""

from __future__ import annotations

import json
from typing import Any


def split_events(raw: bytes) -> list[list[str]]:
    """The raw stream cut at blank lines into events, each a list of its lines (``\\r\\n`` line ends)."""
    text = raw.decode()
    assert text.endswith("\r\n\r\n"), "the stream must end with a complete event"
    return [block.split("\r\n") for block in text[: -len("\r\n\r\n")].split("\r\n\r\n")]


def data_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, JSON payload)`` of every non-comment event."""
    out = []
    for lines in split_events(raw):
        if all(line.startswith(":") for line in lines):
            continue
        name = next(line[len("event: ") :] for line in lines if line.startswith("event: "))
        data = next(line[len("data: ") :] for line in lines if line.startswith("data: "))
        out.append((name, json.loads(data)))
    return out


def _walk(document: Any, path: str) -> tuple[Any, str | int]:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
    parent = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    return parent, (int(last) if isinstance(parent, list) and last != "-" else last)


def apply_delta(document: dict[str, Any], delta: dict[str, Any]) -> None:
    """RFC 6902 ``add``/``replace``/``remove`` plus the server's ``concat_string`` and ``inc``."""
    op, path = delta["op"], delta["path"]
    parent, key = _walk(document, path)
    if op == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), delta["value"])
        else:
            parent[key] = delta["value"]
    elif op == "replace":
        parent[key] = delta["value"]
    elif op == "remove":
        del parent[key]
    elif op == "concat_string" or op == "inc":
        parent[key] = parent[key] + delta["value"]
    else:
        raise AssertionError(f"unexpected op {op}")


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["content"] if part["kind"] == "text")
