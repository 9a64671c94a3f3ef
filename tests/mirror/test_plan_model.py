"""The planner (convsync.mirror.plan.plan_agent) driven by a hypothesis state machine against a simple model.

The model is one agent: the server's conversations, the agent folder's entries, and the saved state (bindings,
pending creates). Users and other clients change folders and conversations at random; a sync plans, every action
is checked against what the model knows to be safe, and then carried out on the model the way the engine carries
it out, sometimes cut short by a crash. After a whole sync with the server's listing, the model must have
converged: every conversation known, every bound folder in place with its marker, a second plan empty.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from convsync.api.models import Conversation
from convsync.mirror.names import name_key, safe_name
from convsync.mirror.plan import (
    Action,
    Adopt,
    CreateFolder,
    CreateRemote,
    DeleteRemote,
    Detach,
    Forget,
    LocalDeletePolicy,
    LocalFolder,
    LocalListing,
    MoveAside,
    Rebind,
    RestoreMarker,
    Warn,
    plan_agent,
)
from convsync.mirror.state import ConversationRow, ConversationStatus, PendingCreate

AID = "agent-1"
# Server names include hostile ones and names that differ only in case; local names are what people type.
SERVER_NAMES = ["Ideas", "ideas", "Q3 report", "Ideas (2)", "", "../x", "a/b", ".", "CON", "x" * 300]
FOLDER_NAMES = ["Ideas", "ideas", "Notes", "Q3 report", "Ideas (2)", "x"]
FILE_NAMES = ["Ideas", "notes.txt", ".hidden", "Q3 REPORT"]


@dataclass(frozen=True)
class Folder:
    """A conversation folder of the model: its marker, and its birth (a new one each time it becomes unmarked
    or is made): convsync may create at most one conversation per birth."""

    marker: str | None
    birth: int


class PlannerModel(RuleBasedStateMachine):
    """One agent's folder, its conversations on the server and the state, changed at random and synced."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(1)
        self.server: dict[str, str] = {}  # id → name, in creation order (the server lists newest first)
        self.local: dict[str, Folder] = {}  # the agent folder's visible folders
        self.files: set[str] = set()  # its other entries: files, hidden ones, .deleted
        self.present = True  # the agent folder exists
        self.backup: dict[str, Folder] = {}  # the folders of an agent folder the user removed whole
        self.rows: dict[str, ConversationRow] = {}
        self.pending: dict[str, str] = {}  # folder → name of a create the server may or may not have done
        self.policy: LocalDeletePolicy = "detach"
        self.crashed = False  # a sync was cut short; the next syncs must finish its work
        self.deleted_by_user: set[str] = set()  # conversations whose folder the user deleted
        self.births: set[int] = set()  # folder births convsync created a conversation for
        self.valve_then_new = False  # the last sync kept folders by the valve and made new ones

    # --- helpers --------------------------------------------------------------------------------------------

    def birth(self) -> int:
        return next(self.ids)

    def row(self, cid: str, folder: str, name: str, status: ConversationStatus = "active") -> ConversationRow:
        return ConversationRow(cid, AID, folder, name, status, 0.0, next(self.ids), "idle", None, 0.0)

    def active(self) -> list[ConversationRow]:
        return [r for r in self.rows.values() if r.status == "active"]

    def listing(self) -> LocalListing:
        if not self.present:
            return LocalListing((), frozenset(), agent_folder_present=False)
        folders = tuple(LocalFolder(name, f.marker) for name, f in sorted(self.local.items()))
        return LocalListing(folders, frozenset(self.local) | frozenset(self.files))

    def remote(self) -> list[Conversation]:
        return [Conversation(cid, name, AID) for cid, name in reversed(self.server.items())]

    def plan(self, with_remote: bool) -> list[Action]:
        return plan_agent(
            remote=self.remote() if with_remote else None,
            local=self.listing(),
            bindings=list(self.rows.values()),
            pending_creates=[PendingCreate(AID, folder, name, 0.0) for folder, name in self.pending.items()],
            policy=self.policy,
        )

    def identities(self) -> set[str]:
        """The conversations whose folder is present: by marker, or an active binding's unmarked folder."""
        keys = {name_key(n) for n, f in self.local.items() if f.marker is None}
        marked = {f.marker for f in self.local.values() if f.marker is not None}
        return marked | {r.id for r in self.active() if name_key(r.folder) in keys}

    def free(self, name: str) -> bool:
        """Whether ``name`` can be made: the model's filesystem is case-insensitive and case-preserving, the
        semantics ``plan_agent``'s name keys are built for."""
        return name_key(name) not in {name_key(n) for n in (*self.local, *self.files)}

    def pick(self, data: st.DataObject, names: Iterable[str]) -> str:
        return data.draw(st.sampled_from(sorted(names)))

    # --- the world changes ----------------------------------------------------------------------------------

    @initialize(policy=st.sampled_from(["detach", "delete_remote"]))
    def choose_policy(self, policy: LocalDeletePolicy) -> None:
        self.policy = policy

    @precondition(lambda self: not self.crashed)
    @rule(name=st.sampled_from(SERVER_NAMES))
    def another_client_creates(self, name: str) -> None:
        self.server[f"c{self.birth()}"] = name

    @precondition(lambda self: not self.crashed and self.server)
    @rule(data=st.data())
    def another_client_deletes(self, data: st.DataObject) -> None:
        del self.server[self.pick(data, self.server)]

    @precondition(lambda self: not self.crashed and self.server)
    @rule(data=st.data(), name=st.sampled_from(SERVER_NAMES))
    def server_renames(self, data: st.DataObject, name: str) -> None:
        self.server[self.pick(data, self.server)] = name

    @precondition(lambda self: not self.crashed and len(self.server) >= 2)
    @rule()
    def server_lists_nothing(self) -> None:
        """A wrong key or an emptied account: every conversation gone at once."""
        self.server.clear()

    @precondition(lambda self: not self.crashed and self.present)
    @rule(name=st.sampled_from(FOLDER_NAMES))
    def user_makes_folder(self, name: str) -> None:
        if self.free(name):
            self.local[name] = Folder(None, self.birth())

    @precondition(lambda self: not self.crashed and self.present)
    @rule(name=st.sampled_from(FILE_NAMES))
    def user_adds_file(self, name: str) -> None:
        if self.free(name):
            self.files.add(name)

    @precondition(lambda self: not self.crashed and self.local)
    @rule(data=st.data())
    def user_deletes_folder(self, data: st.DataObject) -> None:
        name = self.pick(data, self.local)
        folder = self.local.pop(name)
        if folder.marker is not None:
            self.deleted_by_user.add(folder.marker)
        self.deleted_by_user |= {r.id for r in self.active() if r.folder == name}

    @precondition(lambda self: not self.crashed and self.local)
    @rule(data=st.data(), new=st.sampled_from(FOLDER_NAMES))
    def user_renames_folder(self, data: st.DataObject, new: str) -> None:
        old = self.pick(data, self.local)
        if self.free(new):
            self.local[new] = self.local.pop(old)

    @precondition(lambda self: not self.crashed and any(f.marker for f in self.local.values()))
    @rule(data=st.data())
    def user_deletes_marker(self, data: st.DataObject) -> None:
        """The marker says which conversation a folder is: without it (and renamed), it is a new one."""
        name = self.pick(data, [n for n, f in self.local.items() if f.marker])
        self.deleted_by_user.add(str(self.local[name].marker))
        self.local[name] = Folder(None, self.birth())

    @precondition(lambda self: not self.crashed and any(f.marker for f in self.local.values()))
    @rule(data=st.data(), new=st.sampled_from(FOLDER_NAMES))
    def user_copies_folder(self, data: st.DataObject, new: str) -> None:
        old = self.pick(data, [n for n, f in self.local.items() if f.marker])
        if self.free(new):
            self.local[new] = Folder(self.local[old].marker, self.birth())

    @precondition(lambda self: not self.crashed and len(self.local) >= 2)
    @rule()
    def user_deletes_every_folder(self) -> None:
        """rm -rf Agent/*: the safety valve must keep every conversation on the server (if two or more)."""
        self.deleted_by_user |= {f.marker for f in self.local.values() if f.marker is not None}
        self.deleted_by_user |= {r.id for r in self.active() if r.folder in self.local}
        self.local.clear()

    @precondition(lambda self: not self.crashed and self.present)
    @rule()
    def agent_folder_vanishes(self) -> None:
        """An unmounted disk or a moved agent folder: the safety valve must keep everything on the server."""
        self.backup = {**self.backup, **self.local}
        self.local.clear()
        self.files.clear()
        self.present = False

    @precondition(lambda self: not self.crashed and self.backup)
    @rule()
    def agent_folder_comes_back(self) -> None:
        for name, folder in self.backup.items():
            if self.free(name):
                self.local[name] = folder
        self.backup = {}
        self.present = True

    # --- a sync ---------------------------------------------------------------------------------------------

    @rule(data=st.data())
    def sync_with_listing(self, data: st.DataObject) -> None:
        """A pass with the server's listing (the periodic one, or the first)."""
        self.sync(True, data)

    @rule(data=st.data())
    def rescan(self, data: st.DataObject) -> None:
        """A pass over the local folder only (after a watcher event)."""
        self.sync(False, data)

    def sync(self, with_remote: bool, data: st.DataObject) -> None:
        """Plan, check, and carry out the plan, or only a part of it when the process crashes."""
        actions = self.plan(with_remote)
        self.check(actions, with_remote)
        crash_at = data.draw(st.none() | st.integers(min_value=0, max_value=max(0, len(actions) - 1)))
        # The valve on conversations gone from the server is decided before this pass's new conversations (from
        # the listing or a mkdir); the next pass counts them, and moves the old folders aside one pass later.
        self.valve_then_new = any(isinstance(a, CreateFolder | CreateRemote) for a in actions) and any(
            isinstance(a, Warn) and "no longer lists any" in a.message for a in actions
        )
        for i, action in enumerate(actions):
            crash = i == crash_at
            self.apply(action, crash=crash)
            if crash:
                self.crashed = True
                return
        if with_remote:
            self.crashed = False
            self.check_converged()
        assert [a for a in self.plan(with_remote) if not self.settled(a)] == []

    def settled(self, action: Action) -> bool:
        """Whether ``action`` may still be planned right after a whole sync: a warning, or one of two known
        two-pass cases: a marker restored in a folder whose name differs from the bound one only in case (the
        user deleted "Ideas" and made "ideas") is rebound by name on the next pass; folders kept by the valve
        in a pass that also made folders for new conversations are moved aside on the next pass."""
        if isinstance(action, Rebind):
            return name_key(self.rows[action.cid].folder) == name_key(action.folder)
        if isinstance(action, MoveAside):
            return self.valve_then_new
        return isinstance(action, Warn)

    def check(self, actions: list[Action], with_remote: bool) -> None:
        """Every planned action is one the model agrees is safe and well-founded."""
        present = self.identities()
        active = {r.id: r for r in self.active()}
        gone = set(active) - present
        valve = bool(gone) and (not self.present or (gone == set(active) and len(active) >= 2))
        taken = {name_key(n) for n in (*self.local, *self.files, *(r.folder for r in active.values()))}
        new_keys: set[str] = set()
        for a in actions:
            if isinstance(a, CreateFolder):
                assert with_remote and a.cid in self.server and a.cid not in self.rows, a
                assert a.folder == safe_name(a.folder) and not a.folder.startswith("."), a
                key = name_key(a.folder)
                assert key not in taken and key not in new_keys, f"{a} collides with an existing name"
                new_keys.add(key)
            elif isinstance(a, CreateRemote):
                assert a.folder in self.local and self.local[a.folder].marker is None, a
            elif isinstance(a, DeleteRemote):
                assert self.policy == "delete_remote" and not valve, f"{a} despite the safety valve"
                # A crash between moving a folder aside and recording it leaves a binding whose folder is gone:
                # its conversation is no longer on the server, so the delete changes nothing there.
                deleted = a.cid in self.deleted_by_user or a.cid not in self.server
                assert a.cid in gone and deleted, f"{a}: the user did not delete it"
            elif isinstance(a, Detach):
                assert a.cid in gone, a
            elif isinstance(a, Forget):
                assert with_remote and a.cid in gone and a.cid not in self.server, a
            elif isinstance(a, MoveAside):
                assert with_remote and a.folder in self.local and a.cid not in self.server, a
            elif isinstance(a, Rebind):
                assert self.local[a.folder].marker == a.cid and a.cid in active, a
            elif isinstance(a, RestoreMarker):
                assert self.local[a.folder].marker is None and name_key(active[a.cid].folder) == name_key(a.folder)
            elif isinstance(a, Adopt):
                folder = self.local[a.folder]
                pending = self.pending.get(a.folder)
                assert folder.marker == a.cid or (folder.marker is None and pending == self.server.get(a.cid)), a
        if with_remote and not self.server:
            # The server lists nothing: with two or more folders in place, that is a wrong key, not deletions.
            held = {f.marker for f in self.local.values() if f.marker in self.rows} | (present & set(active))
            held = {cid for cid in held if cid is not None and self.rows[cid].status != "deleted"}
            if len(held) >= 2:
                assert not any(isinstance(a, MoveAside) and a.cid for a in actions), "folders moved aside"

    def apply(self, action: Action, *, crash: bool) -> None:
        """``action`` as the engine carries it out; with ``crash``, only its first step happens."""
        if isinstance(action, CreateFolder):
            self.local[action.folder] = Folder(action.cid, self.birth())  # the folder first, then the binding
            self.present = True  # making it makes the agent folder again
            if not crash:
                self.bind(action.cid, action.folder, action.name)
        elif isinstance(action, CreateRemote):
            birth = self.local[action.folder].birth
            assert birth not in self.births, f"{action}: a second conversation for the same folder"
            self.births.add(birth)
            self.pending[action.folder] = action.name
            cid = f"c{self.birth()}"
            self.server[cid] = action.name
            if not crash:
                self.local[action.folder] = replace(self.local[action.folder], marker=cid)
                self.bind(cid, action.folder, action.name)
        elif isinstance(action, Adopt):
            self.local[action.folder] = replace(self.local[action.folder], marker=action.cid)
            if not crash:
                self.bind(action.cid, action.folder, action.name)
        elif isinstance(action, Rebind):
            self.rows[action.cid] = replace(self.rows[action.cid], folder=action.folder)
        elif isinstance(action, RestoreMarker):
            self.local[action.folder] = replace(self.local[action.folder], marker=action.cid)
        elif isinstance(action, MoveAside):
            del self.local[action.folder]
            self.files.add(".deleted")
            if action.cid is not None and not crash:
                self.rows[action.cid] = replace(self.rows[action.cid], status="deleted")
        elif isinstance(action, Detach):
            self.rows[action.cid] = replace(self.rows[action.cid], status="detached")
        elif isinstance(action, DeleteRemote):
            self.server.pop(action.cid, None)
            if not crash:
                self.rows[action.cid] = replace(self.rows[action.cid], status="deleted")
        elif isinstance(action, Forget):
            self.rows[action.cid] = replace(self.rows[action.cid], status="deleted")

    def bind(self, cid: str, folder: str, name: str) -> None:
        old = self.rows.get(cid)
        self.rows[cid] = self.row(cid, folder, old.name if old else name)
        self.pending.pop(folder, None)
        self.present = True

    def check_converged(self) -> None:
        """After a whole sync with the listing: everything on the server is known, every bound folder is in
        place with its marker, nothing is left pending, and no folder is bound twice."""
        assert set(self.server) <= set(self.rows), "a conversation on the server without a folder or a decision"
        for r in self.active():
            markers = {f.marker for n, f in self.local.items() if name_key(n) == name_key(r.folder)}
            assert r.id in markers, f"{r.id}'s folder {r.folder!r} lost"
        assert len({r.folder for r in self.active()}) == len(self.active())
        assert self.pending == {}
        unmarked = [n for n, f in self.local.items() if f.marker is None]
        assert unmarked == [], f"folders left without a conversation: {unmarked}"


def run(max_examples: int, steps: int) -> None:
    run_state_machine_as_test(
        PlannerModel,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_the_planner_keeps_folders_and_conversations_in_line_with_the_model() -> None:
    """Random sequences of folder, server and crash events: every plan is safe and a whole sync converges."""
    run(max_examples=100, steps=40)


@pytest.mark.slow
def test_the_planner_keeps_folders_and_conversations_in_line_with_the_model_long() -> None:
    """The same state machine over many more and longer sequences."""
    run(max_examples=2000, steps=80)
