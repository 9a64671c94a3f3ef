"""The admin API that only the emulator has, under ``/_emulator`` (outside every API prefix, never faulted).

It mirrors the in-process controls of ``EmulatorServer`` for tests and demos that run the emulator as a
separate process. With ``admin_token`` set it wants ``Authorization: Bearer <admin_token>``.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from fastapi import APIRouter, Depends, Request

from convsync.emulator import wire
from convsync.emulator.gateway import ADMIN_PREFIX
from convsync.emulator.options import FaultRule
from convsync.emulator.run import injected_message
from convsync.emulator.runtime import Runtime
from convsync.emulator.wire import ApiFault

# Options that may change while the emulator runs.
RUNTIME_OPTIONS = frozenset(
    {
        "api_key",
        "auth",
        "auth_scheme",
        "parquet_output",
        "page_size",
        "next_form",
        "rate_limit",
        "rate_window",
        "ping_interval",
        "chunk_delay",
        "chunk_size",
        "auto_rename_named",
        "frame_row_cap",
        "null_collections",
        "delete_no_content",
        "hostile_frame_names",
        "list_updated_at",
    }
)


def fault_from_dict(data: Any) -> FaultRule:
    if not isinstance(data, dict):
        raise ApiFault(422, "A fault rule must be a JSON object")
    known = {f.name for f in fields(FaultRule)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ApiFault(422, f"Unknown fault rule keys: {', '.join(unknown)}")
    try:
        return FaultRule(**data)
    except (TypeError, ValueError) as exc:
        raise ApiFault(422, f"Invalid fault rule: {exc}") from None


def options_to_dict(runtime: Runtime) -> dict[str, Any]:
    out = asdict(runtime.options)
    out["data_dir"] = str(out["data_dir"]) if out["data_dir"] is not None else None
    out["api_key"] = "<set>" if out["api_key"] else None
    out["admin_token"] = "<set>" if out["admin_token"] else None
    return out


def admin_router(runtime: Runtime) -> APIRouter:  # noqa: PLR0915 - one closure per route reads best
    async def authorise(request: Request) -> None:
        token = runtime.options.admin_token
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            raise ApiFault(401, "Admin token required")

    router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(authorise)])

    @router.get("/health")
    async def health() -> Any:
        return {"ok": True}

    @router.get("/requests")
    async def requests() -> Any:
        return [asdict(r) for r in runtime.requests]

    @router.delete("/requests")
    async def clear_requests() -> Any:
        runtime.clear_requests()
        return {"ok": True}

    @router.get("/stream-log")
    async def stream_log() -> Any:
        return [asdict(r) for r in runtime.stream_log]

    @router.delete("/stream-log")
    async def clear_stream_log() -> Any:
        runtime.clear_stream_log()
        return {"ok": True}

    @router.get("/faults")
    async def faults() -> Any:
        return [{"rule": asdict(s.rule), "hits": s.hits, "exhausted": s.exhausted} for s in runtime.faults.snapshot()]

    @router.put("/faults")
    async def set_faults(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, list):
            raise ApiFault(422, "Expected a JSON array of fault rules")
        runtime.faults.set([fault_from_dict(item) for item in body])
        return await faults()

    @router.post("/faults")
    async def add_fault(request: Request) -> Any:
        runtime.faults.add(fault_from_dict(await request.json()))
        return await faults()

    @router.delete("/faults")
    async def clear_faults() -> Any:
        runtime.faults.set([])
        return []

    @router.get("/agents")
    async def agents() -> Any:
        return [a.to_wire() | {"hidden": a.hidden} for a in runtime.store.agents(include_hidden=True)]

    @router.post("/agents")
    async def add_agent(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise ApiFault(422, "Request validation failed: body -> name: Field required")
        mode = body.get("mode", "conversational")
        if mode not in ("conversational", "worker"):
            raise ApiFault(422, "mode must be 'conversational' or 'worker'")
        row = runtime.store.add_agent(
            body["name"],
            mode=mode,
            description=str(body.get("description", "")),
            hidden=bool(body.get("hidden")),
        )
        return row.to_wire()

    @router.post("/conversations/{cid}/messages")
    async def inject_message(cid: str, request: Request) -> Any:
        """Adds a message as if another client or the agent had written it (no run)."""
        body = await request.json()
        if runtime.store.conversation(cid) is None:
            raise ApiFault(404, f"Conversation {cid} not found")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ApiFault(422, "Request validation failed: body -> text: Field required")
        role = body.get("role", "agent")
        if role not in ("user", "agent"):
            raise ApiFault(422, "role must be 'user' or 'agent'")
        message = injected_message(
            body["text"], role, complete=bool(body.get("complete", True)), no_content=bool(body.get("no_content"))
        )
        runtime.store.add_message(cid, message)
        return wire.to_rest(message)

    @router.get("/options")
    async def options() -> Any:
        return options_to_dict(runtime)

    @router.patch("/options")
    async def change_options(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, dict):
            raise ApiFault(422, "Expected a JSON object of options")
        unknown = sorted(set(body) - RUNTIME_OPTIONS)
        if unknown:
            raise ApiFault(422, f"Options that cannot change at run time: {', '.join(unknown)}")
        try:
            runtime.configure(**body)
        except (TypeError, ValueError) as exc:
            raise ApiFault(422, f"Invalid options: {exc}") from None
        return options_to_dict(runtime)

    return router
