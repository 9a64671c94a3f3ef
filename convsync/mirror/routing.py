"""From a file event under the root to the job it asks for: pure, given what the engine knows of the tree.

A hint says "something happened at this path"; ``route`` says which job should look (debounced by the
engine): the lists pass for the root marker, an agent pass for a folder made, removed or renamed in an agent
folder, a conversation's reconcile (with what it should look at first) for anything inside a bound
conversation folder. convsync's own writes (``status``, ``transcript.md``, ``files/``, temp names, folders
it is building) route nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from convsync.mirror.atomic import TEMP_PREFIX
from convsync.mirror.folders import CONVERSATION_MARKER, DATA_FRAMES, FILES, INBOX, OWN_FILES, ROOT_MARKER
from convsync.mirror.prompt import PROMPT, TAKING
from convsync.mirror.scheduler import LISTS, RESCAN, AgentJob, Job
from convsync.watch import Hint

FolderKey = tuple[str, str]  # (agent folder, conversation folder)


@dataclass(frozen=True, slots=True)
class Route:
    """What a file event asks for; the empty route: nothing."""

    jobs: tuple[Job, ...] = ()  # lists, rescan or agent jobs
    conversation: str | None = None  # a conversation to look at (its reconcile, with local flags)
    prompt_saved: bool = False  # ... because its prompt.txt was saved
    inbox_name: str | None = None  # ... because this file of its inbox/ was finished
    orphan: FolderKey | None = None  # a prompt saved in a folder not bound yet: remembered for its binding


NOTHING = Route()


def route(
    hint: Hint,
    root: Path,
    *,
    agents: Mapping[str, str],
    conversation_of: Callable[[FolderKey], str | None],
    building: Callable[[FolderKey], bool],
) -> Route:
    """The route of ``hint``. ``agents``: agent folder → id; ``conversation_of``: the conversation bound to a
    folder; ``building``: whether the engine is building that folder (not bound yet)."""
    try:
        parts = hint.path.relative_to(root).parts
    except ValueError:
        return NOTHING
    if not parts:
        return NOTHING
    if hint.kind == "moved_to" and hint.source is not None and _renamed_into_place(hint.source, root):
        # The engine's own new conversation folder (and, as watchdog walks it, everything in it): bound and
        # scheduled already. Reacting would plan the whole agent again for each new folder.
        return NOTHING
    if parts[0] == ROOT_MARKER:
        return Route(jobs=(LISTS,))
    if parts[0].startswith("."):
        return NOTHING  # .deleted/, our temp folders
    if len(parts) > 2 and parts[1].startswith(TEMP_PREFIX):
        return NOTHING  # inside a conversation folder the engine is building
    aid = agents.get(parts[0])
    agent_pass = (AgentJob(aid),) if aid else ()
    if len(parts) <= 2:
        if len(parts) == 2 and (parts[1].startswith(".") or building((parts[0], parts[1]))):
            return NOTHING  # our conversation folders under construction
        return Route(jobs=agent_pass or (RESCAN,))
    key = (parts[0], parts[1])
    name = parts[2]
    cid = conversation_of(key)
    if cid is None:
        orphan = key if name == PROMPT and is_save(hint) else None
        return Route(jobs=() if building(key) else agent_pass, orphan=orphan)
    if len(parts) == 3:
        if name in OWN_FILES and hint.kind not in ("deleted", "moved_from"):
            return NOTHING  # our own writes
        if name.startswith(TEMP_PREFIX) or name == TAKING:
            return NOTHING
        jobs = agent_pass if name == CONVERSATION_MARKER else ()
        return Route(jobs=jobs, conversation=cid, prompt_saved=name == PROMPT and is_save(hint))
    if name in (FILES, DATA_FRAMES):
        return NOTHING  # convsync's downloads and exports
    finished = name == INBOX and len(parts) == 4 and hint.kind in ("closed", "moved_to")
    return Route(conversation=cid, inbox_name=parts[3] if finished else None)


def is_save(hint: Hint) -> bool:
    """A close after writing, or a rename onto the file — except convsync's own swap of ``prompt.txt``."""
    if hint.kind == "closed":
        return True
    return hint.kind == "moved_to" and (hint.source is None or hint.source.name != TAKING)


def _renamed_into_place(source: Path, root: Path) -> bool:
    """Whether ``source`` lies in a conversation folder the engine built under a temp name."""
    try:
        parts = source.relative_to(root).parts
    except ValueError:
        return False
    return len(parts) >= 2 and parts[1].startswith(TEMP_PREFIX)
