"""The rooms of the client side keep the import rules docs/architecture.md states: the actions
import one another only in their documented order, the untrusted-text helpers and the config
modules stay at the bottom, and nothing on the client side imports in a cycle (imports inside
functions included). Read from the source, so no module is loaded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agentcom_skill

PACKAGE = Path(agentcom_skill.__file__).parent
# docs/architecture.md, "The actions": each module may import only those before it.
ACTIONS_ORDER = ["common", "refs", "hazards", "check", "finish", "send", "history", "channels", "status", "config_init"]
# Modules that may import only these of the package.
ONLY = {
    "untrusted": set(),
    "render": {"untrusted"},
    "config": {"errors"},
    "config_write": {"config", "errors"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in it (names relative to the package)."""
    name = module_name(path)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("agentcom_skill."):
                module = node.module.removeprefix("agentcom_skill.")
            else:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                found.add(full if full in known else module)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("agentcom_skill.") for a in node.names}
    return {m for m in found if m in known and m != name and m != ""}


def client_side_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "hub" not in p.relative_to(PACKAGE).parts[:1]]
    known = {module_name(p) for p in paths}
    return {module_name(p): package_imports(p, known) for p in paths}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


GRAPH = client_side_graph()


def test_the_actions_import_one_another_only_in_their_order():
    assert {f"actions.{m}" for m in ACTIONS_ORDER} == {m for m in GRAPH if m.startswith("actions.")}
    for i, room in enumerate(ACTIONS_ORDER):
        inside = {m.removeprefix("actions.") for m in GRAPH[f"actions.{room}"] if m.startswith("actions.")}
        assert inside <= set(ACTIONS_ORDER[:i]), f"actions.{room} imports {sorted(inside - set(ACTIONS_ORDER[:i]))}"


@pytest.mark.parametrize("module", sorted(ONLY))
def test_the_bottom_modules_import_only_what_the_rules_allow(module):
    assert GRAPH[module] <= ONLY[module], f"{module} imports {sorted(GRAPH[module] - ONLY[module])}"


def test_no_import_cycle_on_the_client_side():
    assert cycle(GRAPH) is None, " -> ".join(cycle(GRAPH) or [])
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"], "the check finds a cycle"


def test_every_public_action_is_reached_from_its_room():
    for name, room in agentcom_skill._ACTIONS.items():
        action = getattr(agentcom_skill, name)
        assert action.__module__ == f"agentcom_skill.actions.{room}", name
