"""Which agents and conversations are mirrored, and the folder indexes a file event is routed with.

The configuration selects agents (``agents:``; an agent dropped from it is left alone), the state binds them
and their conversations to folders. ``Selection`` answers "which agents, which active conversations" for
every job, cached until a binding or the selectors change, and keeps the indexes ``routing.route`` reads on
the watcher's thread: (agent folder, conversation folder) → conversation id, agent folder → agent id. It
reads the state database only; the lock it is handed (the engine's) guards the indexes. ``bind_root``: the
bindings belong to one root.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from convsync.config import AgentSelector
from convsync.mirror.state import AgentRow, ConversationRow, State

log = logging.getLogger(__name__)


class Selection:
    def __init__(self, state: State, lock: AbstractContextManager[object]) -> None:
        self._state = state
        self._lock = lock
        self._agents_cache: tuple[tuple[object, ...], list[AgentRow]] | None = None
        self._index_key: tuple[object, ...] | None = None  # (bindings version, selectors, root) of the index
        self.folders: dict[tuple[str, str], str] = {}  # (agent folder, conversation folder) → id
        self.agent_folders: dict[str, str] = {}  # agent folder → agent id

    def agents(self, selectors: Sequence[AgentSelector]) -> list[AgentRow]:
        """The bound agents ``selectors`` select (all when empty). Callers must not modify the list."""
        key = (self._state.bindings_version, tuple(selectors))  # the version first: a write in between rebuilds
        cached = self._agents_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = [
            a
            for a in self._state.agents()
            if not selectors
            or any(
                (sel.id is not None and sel.id == a.id)
                or (sel.name is not None and sel.name.casefold() == a.name.casefold())
                for sel in selectors
            )
        ]
        self._agents_cache = (key, rows)
        return rows

    def conversations(self, selectors: Sequence[AgentSelector]) -> list[ConversationRow]:
        """The active conversations of the selected agents."""
        agents = {a.id for a in self.agents(selectors)}
        return [c for c in self._state.conversations(status="active") if c.agent_id in agents]

    def rebuild(self, selectors: Sequence[AgentSelector], root: Path) -> None:
        """Bring the indexes up to date with the bindings (a no-op when no binding changed: the idle case)."""
        # The version is read before the rows: a write in between only makes the next call rebuild again.
        key = (self._state.bindings_version, tuple(selectors), root)
        if key == self._index_key:
            return
        agents = {a.id: a.folder for a in self.agents(selectors)}
        index = {(agents[c.agent_id], c.folder): c.id for c in self.conversations(selectors)}
        with self._lock:
            self.agent_folders = {folder: aid for aid, folder in agents.items()}
            self.folders = index
            self._index_key = key


def bind_root(state: State, root: Path) -> None:
    """Bindings belong to one root: a different root starts from scratch (the old one is left alone)."""
    resolved = str(root.resolve())
    recorded = state.get_meta("root")
    if recorded is not None and recorded != resolved:
        log.warning("the mirror root changed from %s to %s: mirroring everything anew", recorded, resolved)
        state.reset_bindings()
    if recorded != resolved:
        state.set_meta("root", resolved)
