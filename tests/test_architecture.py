"""The house rules of docs/architecture.md ("Which module may import which"), checked on the
import graph of agentcom_skill as `ast` reads it: every import, those inside functions included,
relative ones resolved. Imports under `if TYPE_CHECKING:` run no code: they are left out of the
cycles and the rules (the document allows them, e.g. `delivery` naming `config.Settings`).

The module layout changes as rooms are carved out (issue 29): the roles below are lists of
module names to update as modules appear or move. A name stands for that module and, for a
package, everything in it ("hub" is hub/__init__.py, hub/server.py, ...). A name that does not
exist (yet, or any more) is fine; a rule none of whose modules exist is skipped, not failed.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pytest
from hubprocess import ROOT

PACKAGE = ROOT / "agentcom_skill"
TOP = "__init__"  # the package itself, agentcom_skill/__init__.py

# The roles --------------------------------------------------------------------------------------

# the pure core: no I/O, imports only itself
CORE = {"errors", "message", "tier0", "groups", "delivery", "stored", "render", "untrusted"}
# the store and its rooms (schema, file safety, the A2A task table), and the one-time import of
# 0.1's state
STORE = {"store", "store_db", "store_history", "migrations", "files", "a2a_tasks", "legacy"}
# the other shells: settings, HTTP, the watch's status file, the OpenClaw plugin's installer
SHELLS = STORE | {"config", "config_write", "transport", "client", "watchstate", "openclaw_plugin"}
# the actions package (`skill.py` before it) and the lease hand-off they share
ACTIONS = {"skill", "actions", "handoff"}
# the front ends, each a group: one never imports another. The watch and its wakes are one front
# end: the watch drives the wakes, and `a2a` uses `wake`'s outcome and error record (`WakeOutcome`,
# `wake_error`), never the reverse (the cycle test would say so).
FRONT_ENDS = {
    "mcp": {"mcpserver"},
    "doctor": {"doctor"},
    "demo": {"demo"},
    "watch": {"watch", "wakethread", "watchhazards", "hookwake", "wake", "a2a"},
}
CLI = {"cli", "__main__"}
HUB = {"hub"}

# The rules --------------------------------------------------------------------------------------

# module -> the only modules of the package it may import (besides itself and the package's
# __init__, which every import of a submodule runs anyway)
ONLY: dict[str, set[str]] = {
    "errors": set(),
    "message": {"errors"},
    "tier0": {"message"},
    "groups": {"message", "errors"},
    "delivery": {"message", "tier0"},
    "stored": CORE,
    "render": {"untrusted"},  # the untrusted-text helpers (guarantee 9)
    "untrusted": set(),
    "migrations": set(),
    "files": {"errors"},
    "config": {"errors"},
    "transport": {"errors"},
    "client": {"transport", "message", "errors"},
    "store_db": CORE | {"migrations", "files"},
    "store_history": CORE | {"migrations", "files", "store_db"},
    "store": CORE | {"migrations", "files", "store_db", "store_history"},
    "a2a_tasks": CORE | {"store", "store_db", "migrations"},
    "openclaw_plugin": {"config", "errors"},
    TOP: {"errors"} | ACTIONS,  # `__getattr__` reaches the actions lazily
    "hub": HUB | {"files"},  # `create_private`, the private file mode
}

ALL_FRONT_ENDS = set().union(*FRONT_ENDS.values())
EVERYTHING = {""}  # matches every module


class Never(NamedTuple):
    who: set[str]
    never: set[str]
    why: str
    who_but: set[str] = set()  # modules of `who` the rule leaves out
    never_but: set[str] = set()  # modules of `never` the rule leaves out


NEVER: list[Never] = [
    Never(CORE, EVERYTHING, "the pure core imports no shell", never_but=CORE),
    Never(SHELLS, ACTIONS | ALL_FRONT_ENDS | CLI | HUB, "dependencies point inward: a shell imports no action"),
    Never(ACTIONS, ALL_FRONT_ENDS | CLI | HUB, "the actions import no front end"),
    Never(
        EVERYTHING,
        HUB,
        "hub/ stands apart: only `agentcom hub` and the demo start it",
        who_but=HUB | {"cli.hubcmd", "demo"},
    ),
    Never(EVERYTHING, CLI, "nothing imports the command line", who_but=CLI),
    *(
        Never(FRONT_ENDS[a], FRONT_ENDS[b], f"front ends never import each other ({a} -> {b})")
        for a in FRONT_ENDS
        for b in FRONT_ENDS
        if a != b
    ),
]

# imports that must happen where they are used (inside a function), because most runs never need
# them: the network client from the actions, and each heavy command from the command line
LATE: list[tuple[set[str], set[str]]] = [
    (ACTIONS, {"client"}),
    ({"cli"}, HUB | {"watch", "demo", "doctor", "mcpserver", "openclaw_plugin"}),
]

# The graph --------------------------------------------------------------------------------------


class Import(NamedTuple):
    source: str
    target: str
    line: int
    late: bool  # inside a function

    def where(self) -> str:
        return f"{module_path(self.source)}:{self.line}{' (in a function)' if self.late else ''}"


def module_path(name: str) -> str:
    relative = "__init__.py" if name == TOP else name.replace(".", "/") + ".py"
    path = PACKAGE / relative
    if not path.exists():
        path = PACKAGE / name.replace(".", "/") / "__init__.py"
    return str(path.relative_to(ROOT))


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts) or TOP] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import of one module, with its line and whether it sits in a function; those under
    `if TYPE_CHECKING:` left out."""

    def __init__(self, name: str, is_package: bool, known: set[str]) -> None:
        self.name, self.known, self.depth = name, known, 0
        here = [] if name == TOP else name.split(".")
        self.package = here if is_package else here[:-1]
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE.name:
                self._add(".".join(parts[1:]) or TOP, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = (node.module or "").split(".") if node.module else []
        if node.level:
            up = node.level - 1
            if up > len(self.package):
                raise AssertionError(f"{module_path(self.name)}:{node.lineno}: a relative import beyond the package")
            base = self.package[: len(self.package) - up] + module
        elif module and module[0] == PACKAGE.name:
            base = module[1:]
        else:
            return  # not of the package
        for alias in node.names:
            named = ".".join([*base, alias.name])
            self._add(named if named in self.known else ".".join(base) or TOP, node)

    def _add(self, target: str, node: ast.stmt) -> None:
        if target != self.name:
            self.found.append(Import(self.name, target, node.lineno, self.depth > 0))


@functools.cache
def graph() -> tuple[dict[str, Path], tuple[Import, ...]]:
    found = modules()
    known = set(found)
    edges: list[Import] = []
    for name, path in found.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges += dict.fromkeys(visitor.found)  # one per statement, however many names it imports
    return found, tuple(edges)


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in patterns)


def find_cycle(edges: Iterable[Import]) -> list[Import] | None:
    """One import cycle (its edges in order), or None: a depth-first search for a back edge."""
    out: dict[str, list[Import]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge)
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[Import] = []

    def visit(node: str) -> list[Import] | None:
        state[node] = 1
        for edge in out.get(node, []):
            if state.get(edge.target) == 1:
                start = next((i for i, e in enumerate(path) if e.source == edge.target), len(path))
                return [*path[start:], edge]
            if edge.target not in state:
                path.append(edge)
                if (cycle := visit(edge.target)) is not None:
                    return cycle
                path.pop()
        state[node] = 2
        return None

    for node in sorted(out):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def describe(edges: Iterable[Import]) -> str:
    return "\n".join(f"  {e.source} -> {e.target}   ({e.where()})" for e in edges)


# The tests --------------------------------------------------------------------------------------


def test_the_graph_sees_every_kind_of_import():
    """So the rules below can fail: relative imports one and two levels up, a package's own
    modules, imports inside functions, and none from under TYPE_CHECKING."""
    found, edges = graph()
    assert {"errors", "cli.base", "hub.server", TOP, "cli"} <= set(found)
    pairs = {(e.source, e.target) for e in edges}
    assert ("message", "errors") in pairs  # from .errors import ...
    assert ("cli.base", "errors") in pairs  # from ..errors import ...
    assert ("cli.check", "actions.check") in pairs  # from ..actions import check (a package's module)
    assert ("hub.server", "hub.store") in pairs  # a subpackage's own modules
    assert any(e.late for e in edges if e.source.startswith("cli."))  # imports inside functions
    assert ("delivery", "config") not in pairs, "an import under TYPE_CHECKING runs nothing"


def test_no_import_cycles():
    """Imports inside functions included. An import of the package itself (`from . import
    __version__`) is left out: importing any module of the package runs its __init__ first, and
    its `__getattr__` reaches the actions lazily, as docs/architecture.md says."""
    _, edges = graph()
    cycle = find_cycle(e for e in edges if e.target != TOP)
    assert cycle is None, "an import cycle:\n" + describe(cycle or [])


def test_the_cycle_finder_finds_one():
    a, b, c = Import("a", "b", 1, False), Import("b", "c", 2, True), Import("c", "a", 3, False)
    assert find_cycle([a, b, Import("b", "d", 4, False)]) is None
    assert find_cycle([Import("x", "a", 9, False), a, b, c]) == [a, b, c]


@pytest.mark.parametrize("who", sorted(ONLY))
def test_a_module_imports_only_what_it_may(who):
    found, edges = graph()
    if not any(matches(name, [who]) for name in found):
        pytest.skip(f"no module {who} (yet)")
    allowed = ONLY[who] | {who, TOP}
    wrong = [e for e in edges if matches(e.source, [who]) and not matches(e.target, allowed)]
    assert not wrong, f"{who} may import only {sorted(ONLY[who])} of the package:\n" + describe(wrong)


@pytest.mark.parametrize("rule", NEVER, ids=[r.why for r in NEVER])
def test_a_module_never_imports_what_it_must_not(rule):
    found, edges = graph()
    who = {n for n in found if matches(n, rule.who) and not matches(n, rule.who_but)}
    never = {n for n in found if matches(n, rule.never) and not matches(n, rule.never_but) and n != TOP}
    if not who or not never:
        pytest.skip("the modules of this rule do not exist (yet)")
    wrong = [e for e in edges if e.source in who and e.target in never]
    assert not wrong, rule.why + ":\n" + describe(wrong)


@pytest.mark.parametrize("who,heavy", LATE, ids=[f"{sorted(w)}" for w, _ in LATE])
def test_heavy_modules_are_imported_where_they_are_used(who, heavy):
    found, edges = graph()
    if not any(matches(n, who) for n in found) or not any(matches(n, heavy) for n in found):
        pytest.skip("the modules of this rule do not exist (yet)")
    early = [e for e in edges if matches(e.source, who) and matches(e.target, heavy) and not e.late]
    assert not early, "imported at the top, so every run pays for it:\n" + describe(early)


# Sizes ------------------------------------------------------------------------------------------

MAX_MODULE_LINES = 900
MAX_CLASS_LINES = 600


def too_big(found: dict[str, Path]) -> list[str]:
    """Each module over MAX_MODULE_LINES lines and each class over MAX_CLASS_LINES, with its size."""
    over = []
    for name, path in found.items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            over.append(f"{module_path(name)}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    over.append(f"{module_path(name)}:{node.lineno}: class {node.name}, {size} lines")
    return over


def test_no_module_over_900_lines_and_no_class_over_600():
    """One room, one job (issue 29): a newcomer reads a module in one sitting."""
    over = too_big(modules())
    assert not over, "too big:\n  " + "\n  ".join(over)
