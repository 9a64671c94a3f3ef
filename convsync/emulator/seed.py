"""Bulk seeding of an emulator's store: many conversations with long histories, without HTTP round trips.

The scale and start-up benches need 1,000 conversations of 50 messages; creating them through the API would
take minutes (one agent run per message). The seeded messages have the shape the scripted agent produces (a
user text message, then an agent message with a thought and a text part), so the mirror renders them like real
history.
"""

from __future__ import annotations

from datetime import timedelta

from convsync.emulator import wire
from convsync.emulator.server import EmulatorServer
from convsync.emulator.store import Store

_WORDS = (
    "ledger",
    "quarter",
    "revenue",
    "forecast",
    "margin",
    "invoice",
    "supplier",
    "region",
    "variance",
    "audit",
    "budget",
    "churn",
    "cohort",
    "pipeline",
    "backlog",
    "shipment",
    "inventory",
    "pricing",
    "discount",
    "renewal",
)


def _text(seed: int, words: int) -> str:
    return " ".join(_WORDS[(seed * 7 + i * 3) % len(_WORDS)] for i in range(words)).capitalize() + "."


def _part(kind: str, body: str) -> dict[str, object]:
    part: dict[str, object] = {"content_id": wire.new_id(), "kind": kind, "complete": True, kind: body}
    if kind == "text":
        part["citations"] = []
    else:
        part["extras"] = {}
    return part


def seeded_message(role: str, text: str, index: int, *, thought: str | None = None) -> dict[str, object]:
    """One complete, committed message in the store's (SSE, ``+00:00``) form."""
    stamp = wire.sse_time(wire.now() - timedelta(minutes=10) + timedelta(milliseconds=index))
    content = ([_part("thought", thought)] if thought else []) + [_part("text", text)]
    return {
        "message_id": wire.new_id(),
        "role": role,
        "content": content,
        "complete": True,
        "commited": True,
        "created_at": stamp,
        "updated_at": stamp,
        "agent_metadata": {},
        "server_metadata": {},
        "parent_run_id": wire.new_id() if role == "agent" else None,
    }


def seed_conversations(
    target: EmulatorServer | Store,
    agent_id: str,
    conversations: int,
    messages: int,
    *,
    name_prefix: str = "Seeded",
) -> list[str]:
    """Create ``conversations`` conversations of ``agent_id`` with ``messages`` messages each.

    Turns alternate user and agent, oldest first. Returns the conversation ids in creation order."""
    # seed.py belongs to the emulator package, so it may use the server's store directly.
    store = target._store if isinstance(target, EmulatorServer) else target
    if store.agent(agent_id) is None:
        raise ValueError(f"no agent {agent_id} in the emulator's store")
    ids: list[str] = []
    for c in range(conversations):
        conversation = store.create_conversation(agent_id, f"{name_prefix} {c + 1:04d}")
        ids.append(conversation.id)
        for m in range(messages):
            if m % 2 == 0:
                body = seeded_message("user", _text(c + m, 8) + f" (turn {m // 2 + 1})", m)
            else:
                body = seeded_message("agent", _text(c * 3 + m, 40), m, thought=_text(m, 6))
            store.add_message(conversation.id, body)
    return ids
