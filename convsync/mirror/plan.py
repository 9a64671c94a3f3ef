"""Pure planning: (remote listing, local listing, saved state) → actions; and the poll budget.

Nothing here touches the disk or the network, so every decision is unit-tested on plain values
(``tests/mirror/test_plan.py``). ``convsync.mirror.engine`` carries the actions out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from convsync.api.models import Conversation
from convsync.mirror.names import keys_of, name_key, safe_name, unique_name
from convsync.mirror.state import ConversationRow, PendingCreate

LocalDeletePolicy = Literal["detach", "delete_remote"]

# --- listings -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalFolder:
    """A visible folder in an agent folder; ``marker`` is the id in its ``.conversation`` file, if any."""

    name: str
    marker: str | None


@dataclass(frozen=True, slots=True)
class LocalListing:
    folders: tuple[LocalFolder, ...]
    names: frozenset[str]  # every entry of the agent folder (files and hidden ones too): names already taken
    agent_folder_present: bool = True


# --- actions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Adopt:
    """Bind (or re-attach) ``cid`` to the existing ``folder`` that carries its marker."""

    cid: str
    folder: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Rebind:
    """The user renamed the folder of ``cid``: record the new name."""

    cid: str
    folder: str


@dataclass(frozen=True, slots=True)
class RestoreMarker:
    """The bound ``folder`` lost its ``.conversation`` file: write it again."""

    cid: str
    folder: str


@dataclass(frozen=True, slots=True)
class CreateRemote:
    """A new folder without a marker: create a conversation named ``name`` on the server and bind it."""

    folder: str
    name: str


@dataclass(frozen=True, slots=True)
class CreateFolder:
    """A conversation without a folder: create ``folder`` for it."""

    cid: str
    folder: str
    name: str


@dataclass(frozen=True, slots=True)
class MoveAside:
    """The conversation is gone from the server: move ``folder`` under ``.deleted/``.

    ``cid`` is ``None`` for a folder whose marker names a conversation this state never knew and the server
    does not have (copied in from elsewhere).
    """

    cid: str | None
    folder: str


@dataclass(frozen=True, slots=True)
class Detach:
    """The folder of ``cid`` is gone: stop mirroring it, keep the remote conversation."""

    cid: str


@dataclass(frozen=True, slots=True)
class DeleteRemote:
    """The folder of ``cid`` is gone and the policy says so: delete the conversation on the server."""

    cid: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Folder and remote conversation are both gone: mark it deleted."""

    cid: str


@dataclass(frozen=True, slots=True)
class Warn:
    message: str


Action = (
    Adopt | Rebind | RestoreMarker | CreateRemote | CreateFolder | MoveAside | Detach | DeleteRemote | Forget | Warn
)


def plan_agent(
    *,
    remote: Sequence[Conversation] | None,
    local: LocalListing,
    bindings: Sequence[ConversationRow],
    pending_creates: Sequence[PendingCreate] = (),
    policy: LocalDeletePolicy = "detach",
) -> list[Action]:
    """The actions that bring one agent's folder and its conversations on the server in line.

    ``remote``: the server's conversations of the agent, newest first as the server lists them, or ``None``
    when only local changes are to be planned (rescan without listing). ``bindings``: every state row of the
    agent, whatever its status.
    """
    planner = _AgentPlanner(remote, local, bindings, pending_creates, policy)
    planner.marked_folders()
    planner.unmarked_folders()
    planner.gone_folders()
    if remote is not None:
        planner.gone_remotely()
        planner.new_remotely(remote)
    return planner.actions


class _AgentPlanner:
    """The steps of ``plan_agent``; ``claimed`` maps each conversation whose folder is present to it."""

    def __init__(
        self,
        remote: Sequence[Conversation] | None,
        local: LocalListing,
        bindings: Sequence[ConversationRow],
        pending_creates: Sequence[PendingCreate],
        policy: LocalDeletePolicy,
    ) -> None:
        self.remote = remote
        self.local = local
        self.policy = policy
        self.pending_creates = pending_creates
        self.by_id = {b.id: b for b in bindings}
        self.active = [b for b in bindings if b.status == "active"]
        self.remote_by_id = {c.id: c for c in remote} if remote is not None else None
        # A conversation marked deleted (its folder moved to .deleted/, or folder and conversation gone) that the
        # server lists again — an outage made it 404 for a while — is not "known": it gets a folder again.
        self.known_ids = {b.id for b in bindings if b.status != "deleted"}
        self.claimed: dict[str, str] = {}
        self.marked: dict[str, list[LocalFolder]] = {}
        self.actions: list[Action] = []

    def marked_folders(self) -> None:
        """1. Folders that carry a marker: the marker, not the name, says which conversation a folder is."""
        for f in self.local.folders:
            if f.marker:
                self.marked.setdefault(f.marker, []).append(f)
        for cid, folders in self.marked.items():
            binding = self.by_id.get(cid)
            preferred = binding.folder if binding is not None else None
            folders.sort(key=lambda f: (f.name != preferred, f.name))
            primary = folders[0]
            for copy in folders[1:]:
                self.actions.append(
                    Warn(
                        f"folder {copy.name!r} carries the same .conversation marker as {primary.name!r}; it "
                        "is ignored (a copy?). Delete its .conversation file to make it a new conversation."
                    )
                )
            remote_conv = self.remote_by_id.get(cid) if self.remote_by_id is not None else None
            if binding is not None and binding.status == "active":
                self.claimed[cid] = primary.name
                if primary.name != binding.folder:
                    self.actions.append(Rebind(cid, primary.name))
            elif binding is not None and binding.status == "detached":
                self.actions.append(Adopt(cid, primary.name, binding.name))
                self.claimed[cid] = primary.name
            elif self.remote_by_id is None:
                continue  # unknown or deleted: decide once the server's listing is known
            elif remote_conv is not None:
                self.actions.append(Adopt(cid, primary.name, remote_conv.name))
                self.known_ids.add(cid)
                self.claimed[cid] = primary.name
            elif binding is None:
                self.actions.append(MoveAside(None, primary.name))

    def unmarked_folders(self) -> None:
        """2. Folders without a marker: a bound folder that lost it, a mkdir being created, or a new mkdir."""
        active_by_folder = {name_key(b.folder): b for b in self.active}
        pending_by_folder = {name_key(p.folder): p for p in self.pending_creates}
        for f in self.local.folders:
            if f.marker:
                continue
            binding = active_by_folder.get(name_key(f.name))
            if binding is not None and binding.id not in self.claimed and binding.id not in self.marked:
                self.actions.append(RestoreMarker(binding.id, f.name))
                self.claimed[binding.id] = f.name
                continue
            pending = pending_by_folder.get(name_key(f.name))
            if pending is not None:
                if self.remote is None:
                    continue  # it may already exist on the server: wait for the listing
                match = next(
                    (c for c in reversed(self.remote) if c.name == pending.name and c.id not in self.known_ids),
                    None,
                )
                if match is not None:
                    self.actions.append(Adopt(match.id, f.name, match.name))
                    self.known_ids.add(match.id)
                    self.claimed[match.id] = f.name
                    continue
            self.actions.append(CreateRemote(f.name, f.name))

    def gone_folders(self) -> None:
        """3. Bound folders that are gone. Safety valve: when every folder vanished at once (or the agent
        folder did), nothing is deleted on the server: that looks like an unmounted disk or a mistake."""
        gone = [b for b in self.active if b.id not in self.claimed]
        everything = len(gone) == len(self.active) and len(self.active) >= 2
        valve = bool(gone) and (not self.local.agent_folder_present or everything)
        if valve and self.policy == "delete_remote":
            self.actions.append(
                Warn(
                    f"all {len(gone)} conversation folders of this agent vanished at once; detaching them "
                    "instead of deleting them on the server (delete folders one at a time to delete them)"
                )
            )
        for b in gone:
            if self.remote_by_id is not None and b.id not in self.remote_by_id:
                self.actions.append(Forget(b.id))
            elif self.policy == "delete_remote" and not valve:
                self.actions.append(DeleteRemote(b.id))
            else:
                self.actions.append(Detach(b.id))

    def gone_remotely(self) -> None:
        """4. Conversations deleted on the server: their folders move aside (safety valve: not all)."""
        assert self.remote_by_id is not None
        vanished = [cid for cid in self.claimed if cid not in self.remote_by_id]
        if len(vanished) >= 2 and len(vanished) == len(self.claimed):
            self.actions.append(
                Warn(
                    f"the server no longer lists any of this agent's {len(vanished)} conversations; keeping "
                    "their folders in place (check the API key's user and the agent); nothing was moved"
                )
            )
            return
        self.actions += [MoveAside(cid, self.claimed[cid]) for cid in vanished]

    def new_remotely(self, remote: Sequence[Conversation]) -> None:
        """5. Conversations without a folder get one. Oldest first, so that of two same-named conversations
        the older gets the plain name; the choice is stored and never revisited."""
        taken = keys_of(self.local.names) | keys_of(b.folder for b in self.active)
        for conv in reversed(remote):
            if conv.id in self.known_ids:
                continue
            folder = unique_name(safe_name(conv.name), taken)
            taken.add(name_key(folder))
            self.known_ids.add(conv.id)
            self.actions.append(CreateFolder(conv.id, folder, conv.name))


# --- polling budget -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollIntervals:
    active: float
    idle: float
    lists: float


def poll_intervals(
    *,
    n_active: int,
    n_idle: int,
    n_agents: int,
    active_seconds: float,
    idle_seconds: float,
    lists_seconds: float,
    budget_per_second: float,
    requests_per_poll: int = 1,
) -> PollIntervals:
    """The configured intervals, stretched by one common factor when polling would exceed the budget.

    ``budget_per_second``: requests per second polling may use (a fraction of the client's rate limit, leaving
    room for sends and transfers); ``requests_per_poll``: requests one conversation poll makes.
    """
    demand = requests_per_poll * (n_active / active_seconds + n_idle / idle_seconds) + n_agents / lists_seconds
    factor = max(1.0, demand / budget_per_second) if budget_per_second > 0 else 1.0
    return PollIntervals(active_seconds * factor, idle_seconds * factor, lists_seconds * factor)


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: 1, 2, 4 … ``cap`` seconds."""

    base: float = 1.0
    cap: float = 60.0
    failures: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def failed(self) -> float:
        """Record a failure; returns the delay before the next attempt."""
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 16))
        return float(delay * self._rng.uniform(0.8, 1.2))

    def succeeded(self) -> None:
        self.failures = 0
