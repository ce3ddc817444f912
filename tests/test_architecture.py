"""The layout DESIGN.md describes, checked from the source: imports point one way, with no
cycle, and no module reaches into another's private names."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "accel"


def _imports(path: Path) -> set:
    """The accel modules ``path`` imports, anywhere in it (function bodies too)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == "accel":
                parts = node.module.split(".")
                out.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "accel" and len(parts) > 1:
                    out.add(parts[1])
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m for m in out if m in modules and m != path.stem}


GRAPH = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return path[path.index(n):] + [n] if n in path else [m, n]
            if n not in state:
                found = visit(n, path + [n])
                if found:
                    return found
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_no_import_cycle_in_accel():
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))


def test_the_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module, allowed", [
    ("backend", set()),
    ("checks", {"backend"}),
    ("functional", {"backend"}),
    ("decay_mask", set()),
    ("dispatch", {"backend", "functional"}),
    ("layers", {"backend", "checks", "dispatch", "functional"}),
    ("optim", {"backend", "checks", "decay_mask", "dispatch", "functional"}),
])
def test_the_lower_floors_import_only_what_lies_below(module, allowed):
    assert GRAPH[module] <= allowed, GRAPH[module] - allowed


def test_no_private_name_is_used_across_modules():
    """``module._name`` or ``from module import _name`` of an accel module, outside it."""
    found = []
    for path in [*PACKAGE.glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                    "accel")):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.name}: imports {a.name}")
                    aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname or a.name.split(".")[0] for a in node.names
                               if a.name.startswith("accel"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, found
