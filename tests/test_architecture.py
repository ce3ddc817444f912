"""The layers docs/design.md draws, checked from the source: every module of accel sits on a
floor of its table and imports only modules on its floor or below, with no cycle, and no
module reaches into another's private names."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "accel"
KERNELS = ROOT / "kernels"  # installed as accel.kernels
DESIGN = ROOT / "docs" / "design.md"
SECTION = "## Layers of the package"


def _units(package: Path = PACKAGE, kernels: Path = KERNELS) -> dict:
    """The modules of accel by the names the table gives them → their files: ``accel/m.py``
    is ``m`` (``accel/__init__.py`` is ``__init__``), a subpackage ``accel/p/`` is ``p``
    with all its files, and the ``kernels/`` folder is ``kernels``."""
    units = {p.stem: [p] for p in package.glob("*.py")}
    for d in package.iterdir():
        if d.is_dir() and (d / "__init__.py").exists():
            units[d.name] = sorted(d.rglob("*.py"))
    units["kernels"] = sorted(kernels.rglob("*.py"))
    return units


def _dotted(path: Path, package: Path = PACKAGE, kernels: Path = KERNELS) -> str:
    """The module name a file is imported by: accel/dev/opcount.py → accel.dev.opcount,
    kernels/optim_cpu.py → accel.kernels.optim_cpu, accel/dev/__init__.py → accel.dev."""
    if path.is_relative_to(kernels):
        parts = ["accel", "kernels", *path.relative_to(kernels).with_suffix("").parts]
    else:
        parts = ["accel", *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, dotted: str, is_package: bool, units) -> set:
    """The modules of accel (``units``' names) that ``source``, the module ``dotted``,
    imports anywhere (function bodies too); relative imports are resolved from its package.
    A name imported from the package itself that is no module (``__version__``) is none."""
    package = dotted if is_package else dotted.rpartition(".")[0]

    def unit(name):
        parts = name.split(".")
        return parts[1] if parts[0] == "accel" and len(parts) > 1 and parts[1] in units \
            else None

    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.update(unit(f"{module}.{a.name}") for a in node.names)
            found.add(unit(module))
        elif isinstance(node, ast.Import):
            found.update(unit(a.name) for a in node.names)
    own = unit(dotted) or "__init__"
    return found - {None, own}


def _graph(units) -> dict:
    """module → the modules it imports (a subpackage's or the kernels' files together)."""
    return {name: set().union(*(_imports(f.read_text(), _dotted(f), f.name == "__init__.py",
                                         units) for f in files))
            for name, files in units.items()}


def _floors(text: str) -> dict:
    """module → floor, from the table under SECTION: rows ``| floor | `a`, `b` | ... |``."""
    if SECTION not in text:
        raise ValueError(f"no section {SECTION!r}")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    floors = {}
    for line in section.splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        for name in re.findall(r"`([^`]+)`", row.group(2)) if row else ():
            if name in floors:
                raise ValueError(f"{name} is on floors {floors[name]} and {row.group(1)}")
            floors[name] = int(row.group(1))
    return floors


def _upward(graph, floors) -> list:
    """Each import of a module on a higher floor (or on none), as 'a (floor i) → b (j)'."""
    return [f"{m} ({floors[m]}) → {n} ({floors.get(n)})"
            for m in sorted(graph) if m in floors
            for n in sorted(graph[m]) if floors.get(n, float("inf")) > floors[m]]


UNITS = _units()
GRAPH = _graph(UNITS)
FLOORS = _floors(DESIGN.read_text())


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


def test_every_module_of_accel_is_on_a_floor_of_the_design():
    missing = sorted(set(UNITS) - set(FLOORS))
    assert not missing, f"modules on no floor of {DESIGN.name}: {missing}"


def test_every_name_on_a_floor_is_a_module_of_accel():
    extra = sorted(set(FLOORS) - set(UNITS))
    assert not extra, f"on a floor of {DESIGN.name} but no module of accel: {extra}"


@pytest.mark.parametrize("module", sorted(FLOORS))
def test_a_module_imports_only_its_floor_and_below(module):
    breaches = _upward({module: GRAPH.get(module, set())}, FLOORS)
    assert not breaches, breaches


def test_the_measuring_tools_are_the_top_floor():
    """So the floor rule keeps every library module from importing ``accel.dev``."""
    top = max(FLOORS.values())
    assert FLOORS["dev"] == top and FLOORS["opcount"] == top
    assert FLOORS["__init__"] < top  # import accel loads none of it


def test_the_floors_are_read_from_a_table_and_a_breach_is_named():
    text = f"intro\n{SECTION}\n\n| floor | modules |\n|---|---|\n| 1 | `layers`, `optim` |\n" \
           "| 0 | `backend` |\n\n## Next\n| 2 | `ignored` |\n"
    floors = _floors(text)
    assert floors == {"layers": 1, "optim": 1, "backend": 0}
    graph = {"backend": {"layers"}, "layers": {"backend", "optim"}, "optim": {"trainer"}}
    assert _upward(graph, floors) == ["backend (0) → layers (1)", "optim (1) → trainer (None)"]
    with pytest.raises(ValueError, match="layers is on floors 1 and 0"):
        _floors(f"{SECTION}\n| 1 | `layers` |\n| 0 | `layers` |\n")
    with pytest.raises(ValueError, match="no section"):
        _floors("| 1 | `layers` |\n")


def test_imports_are_resolved_from_the_importing_package(tmp_path):
    pkg, kernels = tmp_path / "accel", tmp_path / "kernels"
    (pkg / "dev").mkdir(parents=True)
    kernels.mkdir()
    files = {pkg / "__init__.py": "from .network import Net\n__version__ = '1'\n",
             pkg / "backend.py": "", pkg / "network.py": "", pkg / "dispatch.py": "",
             pkg / "checkpoint.py": "from . import __version__, backend\n",
             pkg / "dev" / "__init__.py": "from . import opcount\n",
             pkg / "dev" / "opcount.py": "from .. import dispatch\n"
                                         "def f():\n    import accel.network\n",
             kernels / "optim_cpu.py": "from .cpu_jit import jit\nfrom accel.backend import x\n",
             kernels / "cpu_jit.py": ""}
    for path, text in files.items():
        path.write_text(text)
    units = _units(pkg, kernels)
    assert set(units) == {"__init__", "backend", "network", "dispatch", "checkpoint", "dev",
                          "kernels"}
    assert _dotted(pkg / "dev" / "opcount.py", pkg, kernels) == "accel.dev.opcount"
    assert _dotted(kernels / "optim_cpu.py", pkg, kernels) == "accel.kernels.optim_cpu"
    got = {name: set().union(*(_imports(f.read_text(), _dotted(f, pkg, kernels),
                                        f.name == "__init__.py", units) for f in fs))
           for name, fs in units.items()}
    assert got == {"__init__": {"network"}, "backend": set(), "network": set(),
                   "dispatch": set(), "checkpoint": {"backend"},
                   "dev": {"dispatch", "network"}, "kernels": {"backend"}}


def test_no_private_name_is_used_across_modules():
    """``module._name`` or ``from module import _name`` of an accel module, outside it."""
    found = []
    for path in [*PACKAGE.rglob("*.py"), *KERNELS.rglob("*.py"),
                 *(ROOT / "benchmarks").rglob("*.py")]:
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
