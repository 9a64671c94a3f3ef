"""From a file event to its job, without a watcher: what a path under the root asks for."""

from __future__ import annotations

from pathlib import Path

from convsync.mirror.routing import NOTHING, Route, route
from convsync.mirror.scheduler import LISTS, RESCAN, AgentJob
from convsync.watch import Hint, HintKind

ROOT = Path("/mirror")
AGENTS = {"Sales": "a1"}
BOUND = {("Sales", "Q3 numbers"): "c1"}


def where(path: str, kind: HintKind = "modified", source: str | None = None, building: bool = False) -> Route:
    hint = Hint(ROOT / path, kind, source=ROOT / source if source else None)
    return route(hint, ROOT, agents=AGENTS, conversation_of=BOUND.get, building=lambda _key: building)


def test_a_saved_prompt_routes_to_its_conversation_with_the_save() -> None:
    """A rename onto prompt.txt looks at the conversation and says the prompt was saved."""
    assert where("Sales/Q3 numbers/prompt.txt", "moved_to", source="Sales/Q3 numbers/.prompt.txt.swp") == Route(
        conversation="c1", prompt_saved=True
    )


def test_convsyncs_own_files_route_nowhere() -> None:
    """A write of status or transcript.md, or into files/, is convsync's own."""
    assert where("Sales/Q3 numbers/status", "closed") == NOTHING
    assert where("Sales/Q3 numbers/transcript.md") == NOTHING
    assert where("Sales/Q3 numbers/files/out.csv", "closed") == NOTHING


def test_a_finished_inbox_file_is_named() -> None:
    """A file closed in inbox/ looks at the conversation with that file first."""
    assert where("Sales/Q3 numbers/inbox/data.csv", "closed") == Route(conversation="c1", inbox_name="data.csv")


def test_a_new_folder_plans_its_agent() -> None:
    """A folder made in an agent folder is an agent pass; in an unknown folder, a rescan."""
    assert where("Sales/New idea", "created") == Route(jobs=(AgentJob("a1"),))
    assert where("Elsewhere/New idea", "created") == Route(jobs=(RESCAN,))


def test_the_root_marker_asks_for_the_lists() -> None:
    """The root marker coming back asks for a lists pass."""
    assert where(".convsync-root", "created") == Route(jobs=(LISTS,))


def test_a_prompt_saved_in_a_folder_not_bound_yet_is_remembered() -> None:
    """A save in a folder convsync has not bound yet is kept for its binding (and plans the agent)."""
    assert where("Sales/Fresh/prompt.txt", "closed") == Route(jobs=(AgentJob("a1"),), orphan=("Sales", "Fresh"))


def test_folders_being_built_route_nowhere() -> None:
    """A folder convsync is building, or its own temp folder renamed into place, asks for nothing."""
    assert where("Sales/Built", "created", building=True) == NOTHING
    assert where("Sales/Built", "moved_to", source="Sales/.convsync-tmp-1") == NOTHING
