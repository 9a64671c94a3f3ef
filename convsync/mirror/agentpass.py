"""The executor of the planner's agent actions: agent folders and conversation folders against the server.

``plan.plan_agent`` decides what an agent's folder and the server's list call for; ``AgentPass`` carries it
out: builds the folders of new server conversations (newest first, in batches, bound once durable), creates a
conversation on the server for a folder made by hand, adopts, rebinds, restores markers, detaches, deletes on
the server after a grace period, moves aside the folders of conversations gone on the server. It holds no
lock: the engine runs one pass per agent at a time (the agent's job key), and moving a folder aside claims
the conversation's key through ``AgentHost``, the narrow view of the engine it is handed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from convsync.api.client import AgentClient
from convsync.api.models import Agent, Conversation
from convsync.api.ratelimit import Lane
from convsync.config import AgentSelector
from convsync.errors import ApiError, AuthError, NotFound, TransientError
from convsync.mirror.conversation import FOLDER_QUIET_SECONDS
from convsync.mirror.folders import (
    CONVERSATION_MARKER,
    Created,
    create_agent_folder,
    create_conversation_folders,
    find_agent_folders,
    list_agent_folder,
    move_aside,
    populate_conversation,
    remove_stale_temp_folders,
    write_marker,
)
from convsync.mirror.names import child, keys_of, name_key, safe_name, unique_name
from convsync.mirror.plan import (
    Action,
    Adopt,
    CreateFolder,
    CreateRemote,
    DeleteRemote,
    Detach,
    Forget,
    LocalDeletePolicy,
    MoveAside,
    Rebind,
    RestoreMarker,
    Warn,
    plan_agent,
)
from convsync.mirror.prompt import write_failed_prompt
from convsync.mirror.state import AgentRow, State

log = logging.getLogger(__name__)

CREATE_BATCH = 100  # new conversation folders built, fsynced and bound together
FIRST_BATCH = 10  # the newest few are built (and fetched) first: the ones a person opens first
LOGGED_ONE_BY_ONE = 3  # more new conversations at once are logged in one line
DELETE_GRACE_SECONDS = 3.0  # a folder must stay gone this long before its conversation is deleted remotely


class AgentHost(Protocol):
    """What an agent pass needs from the engine that runs it."""

    def bound(self, cid: str, agent_folder: str, folder: str, *, new: bool, lane: Lane = ...) -> None:
        """A conversation is bound to a folder: look at it (``new``: also read it from the server)."""

    def built(self, cid: str, path: Path) -> None:
        """The folder of a new server conversation was built just now (nothing to clean up in it)."""

    def building(self, key: tuple[str, str], on: bool) -> None:
        """A folder is being built (events inside it are convsync's own), or no longer."""

    def later(self, agent_id: str, delay: float) -> None:
        """Plan the agent again in ``delay`` seconds."""

    def claim(self, cid: str) -> bool:
        """Take the conversation's job key if no one works on it (False: someone does)."""

    def release(self, cid: str) -> None: ...

    def problem(self, source: str, text: str | None) -> None: ...


class AgentPass:
    """Carries out agent plans; ``vanished`` holds agents whose folder vanished (planned as missing once)."""

    def __init__(self, state: State, client: Callable[[], AgentClient], host: AgentHost) -> None:
        self._state = state
        self._client = client  # the current one (a reload may replace it)
        self._host = host
        self._root = Path()
        self.vanished: set[str] = set()
        self._delete_grace: dict[str, float] = {}  # conversation → when its folder was first seen gone

    def resolve(self, selectors: Sequence[AgentSelector], root: Path) -> list[AgentRow]:
        """The agents ``selectors`` choose (every agent when none), each bound to a folder of ``root`` (created
        when missing)."""
        remote = self._client().list_agents()
        chosen: list[tuple[Agent, str | None]] = []
        if not selectors:
            chosen = [(a, None) for a in remote]
        else:
            for selector in selectors:
                match = next(
                    (
                        a
                        for a in remote
                        if (selector.id and a.id == selector.id)
                        or (selector.name and a.name.casefold() == selector.name.casefold())
                    ),
                    None,
                )
                if match is None:
                    wanted = selector.id or selector.name
                    log.warning("agent %r is not visible with this API key; it is skipped", wanted)
                    continue
                if all(match.id != c[0].id for c in chosen):
                    chosen.append((match, selector.folder))
        bound = {a.id: a for a in self._state.agents()}
        markers = find_agent_folders(root)
        taken = keys_of(p.name for p in root.iterdir())
        rows: list[AgentRow] = []
        for agent, wanted_folder in chosen:
            row = bound.get(agent.id)
            if agent.id in markers:
                folder = markers[agent.id]
            elif row is not None:
                folder = row.folder
                self.vanished.add(agent.id)  # its folder is gone: detach, never delete (valve)
                log.warning("the folder %r of agent %r vanished; recreating it", folder, agent.name)
            else:
                folder = unique_name(safe_name(wanted_folder or agent.name), taken)
            taken.add(name_key(folder))
            create_agent_folder(root, folder, agent.id)
            if row is None or row.folder != folder or row.name != agent.name:
                self._state.bind_agent(agent.id, folder, agent.name)
            rows.append(AgentRow(agent.id, folder, agent.name))
        return rows

    def run(self, agent: AgentRow, remote: list[Conversation] | None, *, root: Path, policy: LocalDeletePolicy) -> bool:
        """Plan ``agent`` against the disk (and ``remote``, the server's list, when given) and carry it out;
        whether there was anything to do."""
        self._root = root
        agent_dir = child(root, root, agent.folder)
        remove_stale_temp_folders(agent_dir)
        listing = list_agent_folder(agent_dir)
        if agent.id in self.vanished:
            listing = type(listing)(listing.folders, listing.names, agent_folder_present=False)
            self.vanished.discard(agent.id)
        actions = plan_agent(
            remote=remote,
            local=listing,
            bindings=self._state.conversations(agent_id=agent.id),
            pending_creates=self._state.pending_creates(agent.id),
            policy=policy,
        )
        if remote is not None:
            actions = _newest_first(actions, remote)
        deletes = {a.cid for a in actions if isinstance(a, DeleteRemote)}
        self._delete_grace = {cid: t for cid, t in self._delete_grace.items() if cid in deletes}
        creates: list[CreateFolder] = []  # consecutive ones are built, fsynced and bound together
        first_batch = True
        made: list[tuple[str, Path]] = []  # (name, folder) of the new folders, logged together
        for action in actions:
            if isinstance(action, CreateFolder):
                creates.append(action)
                # The first ones' reconciles start while the rest are built; the very first batch is small.
                if len(creates) >= (FIRST_BATCH if first_batch else CREATE_BATCH):
                    first_batch = False
                    made += self._create_folders(agent, agent_dir, creates)
                    creates = []
                continue
            made += self._create_folders(agent, agent_dir, creates)
            creates = []
            try:
                self._apply(agent, agent_dir, action)
            except (TransientError, AuthError):
                raise
            except (ApiError, OSError) as exc:
                self._action_failed(agent, type(action).__name__, exc)
        made += self._create_folders(agent, agent_dir, creates)
        _log_new(made)
        return bool(actions)

    def _action_failed(self, agent: AgentRow, what: str, exc: Exception) -> None:
        log.warning("%s: %s failed: %s", agent.folder, what, exc)
        self._host.problem(f"agent {agent.id}", f"{agent.folder}: {exc}")

    def _create_folders(
        self, agent: AgentRow, agent_dir: Path, creates: Sequence[CreateFolder]
    ) -> list[tuple[str, Path]]:
        """New conversations on the server → their folders, then their bindings (after the folders are durable:
        a binding whose folder is missing would read as a folder the user deleted)."""
        if not creates:
            return []
        # Until bound, events inside these folders (watchdog reports their contents as created) must not read
        # as a user's new folder: that would plan the whole agent again, once per event.
        shown: list[tuple[str, str]] = []

        def appeared(created: Created) -> None:
            shown.append((agent.folder, created.folder))
            self._host.building(shown[-1], True)

        try:
            results = create_conversation_folders(self._root, agent_dir, [(a.folder, a.cid) for a in creates], appeared)
            return self._bind_created(agent, creates, results)
        finally:
            for key in shown:
                self._host.building(key, False)

    def _bind_created(
        self, agent: AgentRow, creates: Sequence[CreateFolder], results: Sequence[Created | Exception]
    ) -> list[tuple[str, Path]]:
        made: list[tuple[CreateFolder, Created]] = []
        for action, result in zip(creates, results, strict=True):
            if isinstance(result, Created):
                made.append((action, result))
            else:
                self._action_failed(agent, "CreateFolder", result)
        # Should this fail, the folders stay; with their markers, the next pass adopts them.
        self._state.bind_conversations(agent.id, [(a.cid, c.folder, a.name) for a, c in made])
        for action, created in made:
            self._host.built(action.cid, created.path)
            self._host.bound(action.cid, agent.folder, created.folder, new=True, lane=Lane.FIRST_LOOK)
        return [(action.name, created.path) for action, created in made]

    def _apply(self, agent: AgentRow, agent_dir: Path, action: Action) -> None:
        root = self._root
        if isinstance(action, CreateFolder):
            _log_new(self._create_folders(agent, agent_dir, [action]))
        elif isinstance(action, CreateRemote):
            self._state.add_pending_create(agent.id, action.folder, action.name)
            conv = self._client().create_conversation(agent.id, action.name)
            populate_conversation(root, child(root, agent_dir, action.folder), conv.id)
            self._state.bind_conversation(conv.id, agent.id, action.folder, conv.name)
            log.info(
                "created conversation %r on the server for the folder %s",
                conv.name,
                agent_dir / action.folder,
            )
            self._host.bound(conv.id, agent.folder, action.folder, new=True)
        elif isinstance(action, Adopt):
            populate_conversation(root, child(root, agent_dir, action.folder), action.cid)
            self._state.bind_conversation(action.cid, agent.id, action.folder, action.name)
            self._host.bound(action.cid, agent.folder, action.folder, new=False)
        elif isinstance(action, Rebind):
            self._state.set_conversation_folder(action.cid, action.folder)
            self._host.bound(action.cid, agent.folder, action.folder, new=False)
        elif isinstance(action, RestoreMarker):
            folder = child(root, agent_dir, action.folder)
            age = time.time() - folder.stat().st_mtime
            if age < FOLDER_QUIET_SECONDS:  # maybe being deleted right now: look again when it is quiet
                self._host.later(agent.id, FOLDER_QUIET_SECONDS - age + 0.1)
                return
            write_marker(root, folder, CONVERSATION_MARKER, action.cid)
        elif isinstance(action, MoveAside):
            self._move_aside(agent, agent_dir, action)
        elif isinstance(action, Detach):
            self._state.set_conversation_status(action.cid, "detached")
            log.info("the folder of conversation %s was deleted: detached (the server keeps it)", action.cid)
        elif isinstance(action, DeleteRemote):
            # Wait a moment before deleting on the server: a folder deleted together with the others (the
            # safety valve) or moved back in the meantime must not lose its conversation.
            first = self._delete_grace.setdefault(action.cid, time.monotonic())
            if time.monotonic() - first < DELETE_GRACE_SECONDS:
                self._host.later(agent.id, DELETE_GRACE_SECONDS + 0.1)
                return
            del self._delete_grace[action.cid]
            with contextlib.suppress(NotFound):
                self._client().delete_conversation(agent.id, action.cid)
            self._state.set_conversation_status(action.cid, "deleted")
            log.info("the folder of conversation %s was deleted: deleted it on the server", action.cid)
        elif isinstance(action, Forget):
            self._state.set_conversation_status(action.cid, "deleted")
        elif isinstance(action, Warn):
            log.warning("%s: %s", agent.folder, action.message)
            self._host.problem(f"agent {agent.id}", f"{agent.folder}: {action.message}")

    def _move_aside(self, agent: AgentRow, agent_dir: Path, action: MoveAside) -> None:
        root = self._root
        path = child(root, agent_dir, action.folder)
        if action.cid is not None and not self._host.claim(action.cid):
            self._host.later(agent.id, 1.0)  # it is being worked on; look again in a moment
            return
        try:
            dest = move_aside(root, agent.folder, path)
            if action.cid is not None:
                for entry in self._state.pending(action.cid):
                    if entry.kind == "prompt":
                        write_failed_prompt(dest, entry.seq, entry.payload)
                    self._state.mark_failed(entry.seq, "the conversation was deleted on the server")
                self._state.set_conversation_status(action.cid, "deleted")
            log.info("conversation folder %s moved to %s (gone on the server)", path, dest)
        finally:
            if action.cid is not None:
                self._host.release(action.cid)


def _log_new(made: Sequence[tuple[str, Path]]) -> None:
    if len(made) <= LOGGED_ONE_BY_ONE:
        for name, path in made:
            log.info("new conversation %r → %s", name, path)
    else:  # a first mirror: one line (a thousand lines said nothing more, and cost a write each)
        names = ", ".join(repr(name) for name, _ in made[:LOGGED_ONE_BY_ONE])
        log.info("%d new conversations → %s: %s, …", len(made), made[0][1].parent, names)


def _newest_first(actions: list[Action], remote: Sequence[Conversation]) -> list[Action]:
    """``actions`` with each run of new folders in the server's order, newest first: the planner names them
    oldest first (so the older of two namesakes keeps the plain name), but a person opens the newest first."""
    rank = {c.id: i for i, c in enumerate(remote)}

    def newest(create: CreateFolder) -> int:
        return rank.get(create.cid, len(rank))

    out: list[Action] = []
    run: list[CreateFolder] = []
    for action in [*actions, None]:
        if isinstance(action, CreateFolder):
            run.append(action)
            continue
        ordered: list[CreateFolder] = sorted(run, key=newest)
        out.extend(ordered)
        run = []
        if action is not None:
            out.append(action)
    return out
