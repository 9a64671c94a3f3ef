"""A lint of convsync/mirror/: no lock is held across a network call, and no module there imports the engine.

A lock held across a request also holds it across the rate limiter's wait and the client's retries: every
thread that wants the lock waits for the server. The engine's exclusion is its queue's one-job-per-key rule
instead. The lint reads the source (``ast``): a function makes network calls when it calls anything reached
through a name containing ``client`` or a function (of any module here) that does; a ``with`` block whose
context is a lock or a condition (its name contains ``lock``, ``cond`` or ``_work``) must call none of them.
Functions are matched by name across modules, which errs on the side of finding too much.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

MIRROR = Path(__file__).resolve().parents[2] / "convsync" / "mirror"
LOCKISH = re.compile(r"lock|cond|^_work$", re.IGNORECASE)


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), str(p)) for p in sorted(MIRROR.glob("*.py"))}


def chain(node: ast.expr) -> list[str]:
    """The names along ``a.b(c).d``: ["a", "b", "d"]."""
    names: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return names[::-1]


def calls(node: ast.AST) -> Iterator[list[str]]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            yield chain(sub.func)


def on_client(c: list[str]) -> bool:
    """A method called on a client (building or closing one is no request)."""
    return any("client" in n.lower() for n in c[:-1]) and c[-1] not in ("close", "from_config")


def network_functions(trees: dict[str, ast.Module]) -> set[str]:
    """Names of the functions that (directly or through others of convsync/mirror/) call the client."""
    functions: dict[str, list[ast.AST]] = {}
    classes = {n.name for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    owners = {"self", *classes, *(m.removesuffix(".py") for m in trees)}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                functions.setdefault(node.name, []).append(node)
    found: set[str] = set()

    def reaches(c: list[str]) -> bool:
        # A function of these modules: bare, on self, on a module of the mirror, or on a class of it.
        ours = len(c) == 1 or (len(c) == 2 and c[0] in owners)
        return on_client(c) or (ours and c[-1] in found)

    changed = True
    while changed:
        changed = False
        for name, defs in functions.items():
            if name not in found and any(any(reaches(c) for c in calls(fn)) for fn in defs):
                found.add(name)
                changed = True
    return found


def locked_network_calls(trees: dict[str, ast.Module]) -> list[str]:
    network = network_functions(trees)
    classes = {n.name for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    owners = {"self", *classes, *(m.removesuffix(".py") for m in trees)}
    problems: list[str] = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.With):
                continue
            held = [chain(item.context_expr) for item in node.items]
            if not any(names and LOCKISH.search(names[-1]) for names in held):
                continue
            for block in node.body:
                for c in calls(block):
                    ours = len(c) == 1 or (len(c) == 2 and c[0] in owners)
                    if on_client(c) or (ours and c[-1] in network):
                        problems.append(f"{module}:{node.lineno}: {'.'.join(c)} under {'.'.join(held[0])}")
    return problems


def test_no_lock_is_held_across_a_network_call() -> None:
    """No with-block over a lock or condition in convsync/mirror/ calls the client, directly or through others."""
    assert locked_network_calls(modules()) == []


def test_the_lint_finds_a_request_under_a_lock() -> None:
    """The lint flags a listing fetched under a lock, and one made through a helper."""
    source = """
class Engine:
    def _listing(self):
        return self._client.list_conversations("a")

    def run(self):
        with self._agents_lock:
            self._client.list_agents()
        with self._cond:
            self._listing()
        with self._cond:
            self._due.clear()
"""
    problems = locked_network_calls({"engine.py": ast.parse(source)})
    assert [p.split(": ")[1] for p in problems] == [
        "self._client.list_agents under self._agents_lock",
        "self._listing under self._cond",
    ]


def test_no_module_of_the_mirror_imports_the_engine() -> None:
    """The engine composes the parts; no part reaches back into it."""
    importers = []
    for module, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
            else:
                continue
            if "convsync.mirror.engine" in names:
                importers.append(module)
    assert importers == []
