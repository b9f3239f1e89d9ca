"""The watch's wing keeps the import rules docs/architecture.md states for it (read from the
source, imports inside functions and under TYPE_CHECKING included): one direction, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agentcom_skill"
WING = {
    "watch",
    "watchhazards",
    "wakethread",
    "hookwake",
    "wake",
    "a2a",
    "a2a.plan",
    "a2a.pacer",
    "a2a.client",
    "a2a.newtasks",
    "a2a.answers",
    "a2a.dispatcher",
}
ONLY = {  # module -> the package modules it may import (nothing else)
    "wake": {"config", "errors", "render", "transport", "untrusted"},
    "a2a.plan": {"config", "message", "render", "untrusted"},
    "a2a.pacer": {"transport"},
    "a2a.client": {"transport"},
    "handoff": {"config", "delivery", "message", "store"},
    "watchstate": {"errors", "untrusted"},
}


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{module}.{alias.name}" if module else alias.name
                found.add(target if target in known else module)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentcom_skill"):
            found.add((node.module or "").removeprefix("agentcom_skill").lstrip("."))
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {name: imports_of(name, path, known) for name, path in names.items()}


def reaches(g: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(g[start])
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(g.get(m, ()))
    return False


def test_the_wing_imports_in_one_direction_and_its_base_modules_only_what_they_may():
    g = graph()
    for name, allowed in ONLY.items():
        assert g[name] <= allowed, f"{name} imports {sorted(g[name] - allowed)}"
    for name, deps in g.items():
        if name in WING or name.startswith("tests"):
            continue
        inward = {d for d in deps if d in WING}
        assert inward <= ({"watch"} if name.startswith("cli") else set()), f"{name} imports the wing: {sorted(inward)}"


def test_no_wing_module_or_hand_off_is_on_an_import_cycle():
    g = graph()
    for name in [*WING, "handoff"]:
        assert not reaches(g, name, name), f"{name} is on an import cycle"
