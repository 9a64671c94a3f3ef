"""One agent run as the stream of events of spec section 4: the agent's ``Reply`` becomes JSON-Patch deltas.

The sync route consumes the same events and throws them away, so both routes store identical messages. The
agent message is committed right after ``message_end`` was handed on (the server sends it before its DB
commit): a run cancelled earlier leaves the user message without a reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from convsync.emulator import wire
from convsync.emulator.agent import Part, Reply, ScriptedAgent
from convsync.emulator.store import ConversationRow, Store

AGENT_READY = "agent_ready"
AGENT_EVENT = "agent_event"
FAILED_ON_PURPOSE = "internal_error"  # agent_error code of /fail; "unexpected" means the agent crashed


@dataclass(frozen=True, slots=True)
class Emitted:
    """One SSE event: its name, its JSON payload, and the text it adds to a ``text`` part, if any."""

    event: str
    payload: dict[str, Any]
    text: str | None = None
    message_id: str | None = None


def user_message(text: str) -> dict[str, Any]:
    """A user message as the server stores it (one text part)."""
    stamp = wire.sse_time(wire.now())
    part = {"content_id": wire.new_id(), "kind": "text", "complete": True, "text": text, "citations": []}
    return _stored([part], "user", stamp, None)


def injected_message(text: str, role: str, *, complete: bool = True, no_content: bool = False) -> dict[str, Any]:
    """A message stored without a run (another client, a background agent, a run that died midway)."""
    message = user_message(text)
    message["role"] = role
    message["complete"] = complete
    if no_content:
        message["content"] = []
    return message


def _stored(content: list[dict[str, Any]], role: str, stamp: str, run_id: str | None) -> dict[str, Any]:
    return {
        "content": content,
        "role": role,
        "complete": True,
        "commited": True,
        "created_at": stamp,
        "updated_at": stamp,
        "agent_metadata": {},
        "server_metadata": {},
        "parent_run_id": run_id,
        "message_id": wire.new_id(),
    }


class AgentRun:
    def __init__(
        self,
        store: Store,
        agent: ScriptedAgent,
        conversation: ConversationRow,
        prompt: str,
        *,
        chunk_size: int,
        chunk_delay: float,
    ) -> None:
        self.run_id = wire.new_id()
        self._store = store
        self._agent = agent
        self._conversation = conversation
        self._prompt = prompt
        self._chunk_size = chunk_size
        self._chunk_delay = chunk_delay
        self.crashed: str | None = None  # set when the agent raised: the sync route answers 500

    def _base(self, event_type: str) -> dict[str, Any]:
        return {"timestamp": wire.sse_time(wire.now()), "event_type": event_type}

    def _ids(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "thread_id": self._conversation.id,
            "agent_id": self._conversation.agent_id,
        }

    async def events(self) -> AsyncIterator[Emitted]:
        yield Emitted(AGENT_READY, self._base("agent_ready") | self._ids())
        try:
            reply = await self._agent.respond(self._conversation, self._prompt)
        except Exception as exc:  # the real runner reports any failure of the agent as an agent_error
            self.crashed = str(exc) or type(exc).__name__
            reply = Reply(error=self.crashed)
        if reply.error is not None:
            code = "unexpected" if self.crashed else FAILED_ON_PURPOSE
            error = {"error_id": wire.new_id(), "code": code, "message": reply.error}
            yield Emitted(AGENT_EVENT, self._base("agent_error") | self._ids() | {"error": error, "context": {}})
        elif reply.parts:
            async for emitted in self._message(reply.parts):
                yield emitted
        if reply.rename is not None:
            old, new = reply.rename
            payload = self._base("thread_name_updated") | {
                "thread_id": self._conversation.id,
                "agent_id": self._conversation.agent_id,
                "new_name": new,
                "old_name": old,
                "reason": "manual",
            }
            yield Emitted(AGENT_EVENT, payload)
        yield Emitted(AGENT_EVENT, self._base("agent_finished") | self._ids())

    async def _message(self, parts: tuple[Part, ...]) -> AsyncIterator[Emitted]:
        message_id = wire.new_id()
        created = wire.now()
        sequence = 0

        def content(op: str, path: str, value: Any, text: str | None = None) -> Emitted:
            nonlocal sequence
            sequence += 1
            payload = self._base("message_content") | {
                "sequence_number": sequence,
                "message_id": message_id,
                "delta": {"op": op, "path": path, "value": value},
            }
            return Emitted(AGENT_EVENT, payload, text, message_id)

        ids = {"thread_id": self._conversation.id, "agent_id": self._conversation.agent_id}
        yield Emitted(
            AGENT_EVENT,
            self._base("message_begin") | {"sequence_number": 0, "message_id": message_id} | ids | {"data": {}},
        )
        # The first diff of a message adds every top-level key; the first part rides inside /content.
        first_pieces = self._pieces(parts[0])
        yield content("add", "/message_id", message_id)
        yield content("add", "/role", "agent")
        yield content("add", "/content", [_opening(parts[0], first_pieces[0])], _text_of(parts[0], first_pieces[0]))
        yield content("add", "/created_at", wire.DELTA_EPOCH)
        yield content("add", "/agent_metadata", {})
        yield content("add", "/server_metadata", {})
        yield content("add", "/parent_run_id", self.run_id)
        yield content("add", "/complete", False)
        for index, part in enumerate(parts):
            pieces = first_pieces if index == 0 else self._pieces(part)
            delay = self._chunk_delay if part.delay is None else part.delay
            if index > 0:
                await _pause(delay)
                yield content("add", f"/content/{index}", _opening(part, pieces[0]), _text_of(part, pieces[0]))
            for piece in pieces[1:]:
                await _pause(delay)
                yield content("concat_string", f"/content/{index}/{part.stream_key}", piece, _text_of(part, piece))
            for key in part.initial:
                yield content("replace", f"/content/{index}/{key}", part.body[key])
            yield content("replace", f"/content/{index}/complete", True)
        yield content("replace", "/complete", True)

        updated = wire.now()
        final = [part.body for part in parts]
        data = {
            "message_id": message_id,
            "role": "agent",
            "content": final,
            "created_at": wire.sse_time(created),
            "updated_at": wire.sse_time(updated),
            "agent_metadata": {},
            "server_metadata": {},
            "parent_run_id": self.run_id,
            "complete": True,
            "commited": False,
        }
        sequence += 1
        yield Emitted(
            AGENT_EVENT,
            self._base("message_end") | {"sequence_number": sequence, "message_id": message_id} | ids | {"data": data},
        )
        self._store.add_message(self._conversation.id, _committed(final, message_id, created, updated, self.run_id))

    def _pieces(self, part: Part) -> tuple[str, ...]:
        if part.stream_key is None:
            return ("",)
        if part.chunks is not None:
            return part.chunks or ("",)
        text = str(part.body[part.stream_key])
        size = self._chunk_size
        return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


def _opening(part: Part, first_piece: str) -> dict[str, Any]:
    """The part as first added: only the first characters of its streamed string, not yet complete."""
    value = dict(part.body)
    value.update(part.initial)
    value["complete"] = False
    if part.stream_key is not None:
        value[part.stream_key] = first_piece
    return value


def _text_of(part: Part, piece: str) -> str | None:
    return piece if part.body.get("kind") == "text" and piece else None


def _committed(
    content: list[dict[str, Any]], message_id: str, created: datetime, updated: datetime, run_id: str
) -> dict[str, Any]:
    stored = _stored(content, "agent", wire.sse_time(created), run_id)
    stored["updated_at"] = wire.sse_time(updated)
    stored["message_id"] = message_id
    return stored


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
