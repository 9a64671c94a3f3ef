"""Pure planning of one agent's folders against the server and the saved state (convsync.mirror.plan)."""

from __future__ import annotations

from convsync.api.models import Conversation
from convsync.mirror.plan import (
    Adopt,
    Backoff,
    CreateFolder,
    CreateRemote,
    DeleteRemote,
    Detach,
    Forget,
    LocalFolder,
    LocalListing,
    MoveAside,
    Rebind,
    RestoreMarker,
    Warn,
    plan_agent,
    poll_intervals,
)
from convsync.mirror.state import ConversationRow, ConversationStatus, PendingCreate

AID = "agent-1"


def conv(cid: str, name: str) -> Conversation:
    return Conversation(cid, name, AID)


def bound(cid: str, folder: str, status: ConversationStatus = "active", seq: int = 1) -> ConversationRow:
    return ConversationRow(cid, AID, folder, folder, status, 0.0, seq, "idle", None, 0.0)


def listing(*folders: LocalFolder, extra: tuple[str, ...] = (), present: bool = True) -> LocalListing:
    return LocalListing(tuple(folders), frozenset([f.name for f in folders] + list(extra)), present)


def test_a_remote_conversation_without_folder_gets_one() -> None:
    """A conversation the state does not know gets a folder named after it."""
    actions = plan_agent(remote=[conv("c1", "Q3 report")], local=listing(), bindings=[])
    assert actions == [CreateFolder("c1", "Q3 report", "Q3 report")]


def test_same_named_conversations_get_distinct_folders_oldest_first() -> None:
    """Two conversations named alike get "Name" and "Name (2)"; the older (listed last) gets the plain one."""
    remote = [conv("new", "Same"), conv("old", "Same")]  # the server lists newest first
    actions = plan_agent(remote=remote, local=listing(), bindings=[])
    assert actions == [CreateFolder("old", "Same", "Same"), CreateFolder("new", "Same (2)", "Same")]


def test_a_new_folder_name_avoids_names_already_in_the_agent_folder() -> None:
    """A file or hidden entry with the same name (any case) pushes the new folder to " (2)"."""
    actions = plan_agent(remote=[conv("c1", "notes")], local=listing(extra=("NOTES",)), bindings=[])
    assert actions == [CreateFolder("c1", "notes (2)", "notes")]


def test_hostile_remote_names_become_safe_folder_names() -> None:
    """Names with separators, dots or NUL never become paths outside the agent folder."""
    remote = [conv("a", "../x"), conv("b", "a/b"), conv("c", "."), conv("d", ".."), conv("e", "n\0l")]
    folders = [a.folder for a in plan_agent(remote=remote, local=listing(), bindings=[]) if isinstance(a, CreateFolder)]
    assert all("/" not in f and "\0" not in f and f not in (".", "..") and not f.startswith(".") for f in folders)
    assert len({f.casefold() for f in folders}) == len(folders)


def test_a_bound_conversation_renamed_on_the_server_keeps_its_folder() -> None:
    """A remote rename (auto-title) plans nothing: folders are bound by id, not by name."""
    actions = plan_agent(
        remote=[conv("c1", "A Generated Title")],
        local=listing(LocalFolder("Draft", "c1")),
        bindings=[bound("c1", "Draft")],
    )
    assert actions == []


def test_a_new_folder_without_marker_is_created_on_the_server() -> None:
    """mkdir in an agent folder plans a conversation named like the folder."""
    actions = plan_agent(remote=None, local=listing(LocalFolder("Ideas", None)), bindings=[])
    assert actions == [CreateRemote("Ideas", "Ideas")]


def test_a_folder_renamed_locally_is_rebound() -> None:
    """A marked folder under a new name keeps its conversation; the state learns the new name."""
    actions = plan_agent(remote=None, local=listing(LocalFolder("Renamed", "c1")), bindings=[bound("c1", "Old")])
    assert actions == [Rebind("c1", "Renamed")]


def test_a_bound_folder_that_lost_its_marker_gets_it_back() -> None:
    """The folder the state names, without its marker, is not mistaken for a new mkdir."""
    actions = plan_agent(remote=None, local=listing(LocalFolder("Q3", None)), bindings=[bound("c1", "Q3")])
    assert actions == [RestoreMarker("c1", "Q3")]


def test_a_deleted_folder_is_detached_by_default() -> None:
    """Deleting one of several folders detaches that conversation; nothing happens on the server."""
    actions = plan_agent(
        remote=[conv("c1", "a"), conv("c2", "b")],
        local=listing(LocalFolder("b", "c2")),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
    )
    assert actions == [Detach("c1")]


def test_a_deleted_folder_is_deleted_remotely_when_the_policy_says_so() -> None:
    """With on_local_delete: delete_remote, the conversation is deleted on the server."""
    actions = plan_agent(
        remote=[conv("c1", "a"), conv("c2", "b")],
        local=listing(LocalFolder("b", "c2")),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
        policy="delete_remote",
    )
    assert actions == [DeleteRemote("c1")]


def test_safety_valve_when_every_folder_vanishes_at_once() -> None:
    """All bound folders gone at once (an unmounted disk?) never deletes remotely: detach and warn."""
    actions = plan_agent(
        remote=[conv("c1", "a"), conv("c2", "b")],
        local=listing(),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
        policy="delete_remote",
    )
    assert isinstance(actions[0], Warn)
    assert actions[1:] == [Detach("c1"), Detach("c2")]


def test_safety_valve_when_the_agent_folder_vanished() -> None:
    """A vanished agent folder detaches even its only conversation instead of deleting it."""
    actions = plan_agent(
        remote=[conv("c1", "a")],
        local=listing(present=False),
        bindings=[bound("c1", "a")],
        policy="delete_remote",
    )
    assert [a for a in actions if not isinstance(a, Warn)] == [Detach("c1")]


def test_a_detached_conversation_does_not_come_back() -> None:
    """A detached conversation still on the server gets no new folder."""
    actions = plan_agent(remote=[conv("c1", "a")], local=listing(), bindings=[bound("c1", "a", "detached")])
    assert actions == []


def test_a_conversation_deleted_on_the_server_is_moved_aside() -> None:
    """A bound folder whose conversation the server no longer lists moves aside."""
    actions = plan_agent(
        remote=[conv("c2", "b")],
        local=listing(LocalFolder("a", "c1"), LocalFolder("b", "c2")),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
    )
    assert actions == [MoveAside("c1", "a")]


def test_safety_valve_when_the_server_suddenly_lists_nothing() -> None:
    """If the server drops every conversation at once, no folder is moved: warn instead."""
    actions = plan_agent(
        remote=[],
        local=listing(LocalFolder("a", "c1"), LocalFolder("b", "c2")),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
    )
    assert len(actions) == 1
    assert isinstance(actions[0], Warn)


def test_folder_and_conversation_both_gone_is_forgotten() -> None:
    """Nothing is left to act on: the state just records it as deleted."""
    actions = plan_agent(
        remote=[conv("c2", "b")],
        local=listing(LocalFolder("b", "c2")),
        bindings=[bound("c1", "a"), bound("c2", "b", seq=2)],
    )
    assert actions == [Forget("c1")]


def test_a_marked_folder_the_state_lost_is_adopted() -> None:
    """With a fresh state, existing marked folders bind to their conversations instead of duplicating."""
    actions = plan_agent(remote=[conv("c1", "a")], local=listing(LocalFolder("a", "c1")), bindings=[])
    assert actions == [Adopt("c1", "a", "a")]


def test_a_marked_folder_of_an_unknown_conversation_is_moved_aside() -> None:
    """A folder copied in from elsewhere, naming a conversation the server does not have, moves aside."""
    actions = plan_agent(remote=[], local=listing(LocalFolder("stray", "zz")), bindings=[])
    assert actions == [MoveAside(None, "stray")]


def test_a_detached_conversation_whose_marker_returns_is_reattached() -> None:
    """Putting a folder with the conversation's marker back re-attaches it."""
    actions = plan_agent(
        remote=[conv("c1", "a")],
        local=listing(LocalFolder("a", "c1")),
        bindings=[bound("c1", "a", "detached")],
    )
    assert actions == [Adopt("c1", "a", "a")]


def test_a_create_interrupted_by_a_crash_is_adopted_not_repeated() -> None:
    """A pending mkdir whose conversation exists on the server is bound to it, not created twice."""
    actions = plan_agent(
        remote=[conv("c9", "Ideas")],
        local=listing(LocalFolder("Ideas", None)),
        bindings=[],
        pending_creates=[PendingCreate(AID, "Ideas", "Ideas", 0.0)],
    )
    assert actions == [Adopt("c9", "Ideas", "Ideas")]


def test_a_copied_folder_with_the_same_marker_is_ignored_with_a_warning() -> None:
    """Two folders with one marker: the bound one keeps it, the copy is reported."""
    actions = plan_agent(
        remote=[conv("c1", "a")],
        local=listing(LocalFolder("a", "c1"), LocalFolder("a copy", "c1")),
        bindings=[bound("c1", "a")],
    )
    assert len(actions) == 1
    assert isinstance(actions[0], Warn)
    assert "a copy" in actions[0].message


def test_poll_intervals_keep_the_configured_rates_within_budget() -> None:
    """Few conversations: the configured intervals apply unchanged."""
    intervals = poll_intervals(
        n_active=1,
        n_idle=5,
        n_agents=1,
        active_seconds=2,
        idle_seconds=60,
        lists_seconds=30,
        budget_per_second=1.5,
    )
    assert (intervals.active, intervals.idle, intervals.lists) == (2, 60, 30)


def test_poll_intervals_stretch_to_fit_the_rate_budget() -> None:
    """1000 idle conversations: intervals grow so that polling stays within the budget."""
    intervals = poll_intervals(
        n_active=0,
        n_idle=1000,
        n_agents=1,
        active_seconds=2,
        idle_seconds=60,
        lists_seconds=30,
        budget_per_second=1.5,
        requests_per_poll=2,
    )
    rate = 2 * 1000 / intervals.idle + 1 / intervals.lists
    assert rate <= 1.5 + 1e-9


def test_backoff_grows_and_is_capped() -> None:
    """Failures double the wait (with jitter) up to the cap; success resets it."""
    backoff = Backoff(base=1, cap=8)
    delays = [backoff.failed() for _ in range(6)]
    assert delays[0] <= 1.2
    assert max(delays) <= 8 * 1.2
    assert delays[4] >= 8 * 0.8
    backoff.succeeded()
    assert backoff.failed() <= 1.2


def test_a_conversation_moved_aside_that_the_server_lists_again_gets_a_folder_again() -> None:
    """After an outage made it 404 (folder moved to .deleted/, row marked deleted), the server has it again:
    it is mirrored again into a new folder under its name."""
    actions = plan_agent(
        remote=[conv("c1", "Comes back"), conv("c2", "b")],
        local=listing(LocalFolder("b", "c2")),
        bindings=[bound("c1", "Comes back", "deleted"), bound("c2", "b", seq=2)],
    )
    assert actions == [CreateFolder("c1", "Comes back", "Comes back")]
