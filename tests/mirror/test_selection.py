"""Which agents and conversations are mirrored, and the folder indexes, from a real state database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.config import AgentSelector
from convsync.mirror.selection import Selection
from convsync.mirror.state import State


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    s = State(tmp_path / "state.db")
    s.bind_agent("a1", "Sales", "Sales")
    s.bind_agent("a2", "Support", "Support")
    s.bind_conversation("c1", "a1", "Q3 plan", "Q3 plan")
    s.bind_conversation("c2", "a2", "Refunds", "Refunds")
    yield s
    s.close()


def test_selectors_choose_agents_by_name_whatever_the_case(state: State) -> None:
    """An `agents:` entry naming "sales" selects Sales and only its conversations."""
    selection = Selection(state, threading.RLock())
    selectors = (AgentSelector(name="sales"),)
    assert [a.id for a in selection.agents(selectors)] == ["a1"]
    assert [c.id for c in selection.conversations(selectors)] == ["c1"]


def test_no_selector_selects_every_agent(state: State) -> None:
    """Without `agents:`, every bound agent is mirrored."""
    selection = Selection(state, threading.RLock())
    assert sorted(a.id for a in selection.agents(())) == ["a1", "a2"]


def test_the_index_follows_a_new_binding(state: State) -> None:
    """After a conversation is bound, a rebuild indexes its folder under its agent's folder."""
    selection = Selection(state, threading.RLock())
    root = Path("/tmp/root")
    selection.rebuild((), root)
    assert selection.folders == {("Sales", "Q3 plan"): "c1", ("Support", "Refunds"): "c2"}
    state.bind_conversation("c3", "a1", "Pricing", "Pricing")
    selection.rebuild((), root)
    assert selection.folders[("Sales", "Pricing")] == "c3"
    assert selection.agent_folders == {"Sales": "a1", "Support": "a2"}
