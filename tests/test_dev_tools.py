"""accel.dev holds the measuring tools (opcount, cuda_compile): no library module imports it,
importing accel leaves it unloaded, the install ships it, and ``accel.opcount`` is its
counting backend under the public name."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the installed packages and the folders they come from (pyproject's package-dir)
SOURCES = {"accel": ROOT / "accel", "accel.kernels": ROOT / "kernels"}
ALIAS = ROOT / "accel" / "opcount.py"  # the public name of accel.dev.opcount


def _modules_imported(source: str, package: str) -> set:
    """Every module ``source`` (a module of ``package``) imports, relative imports resolved,
    anywhere in it (function bodies too); ``from a import b`` gives a and a.b."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def _imports_dev(modules) -> list:
    return sorted(m for m in modules if m == "accel.dev" or m.startswith("accel.dev."))


def _library_files():
    for package, folder in SOURCES.items():
        for path in sorted(folder.glob("*.py")):
            if path != ALIAS:
                yield package, path


def test_no_library_module_imports_accel_dev():
    files = list(_library_files())
    assert len(files) > 30  # accel's modules and the kernels
    found = {str(path.relative_to(ROOT)): _imports_dev(_modules_imported(path.read_text(), pkg))
             for pkg, path in files}
    assert not {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("source, package", [
    ("from .dev import cuda_compile", "accel"),
    ("from . import dev", "accel"),
    ("def f():\n    from accel.dev.opcount import Count", "accel"),
    ("import accel.dev.cuda_compile", "accel"),
    ("from ..dev import opcount", "accel.kernels"),
])
def test_the_check_finds_an_import_of_accel_dev(source, package):
    assert _imports_dev(_modules_imported(source, package))


def test_the_check_passes_other_imports():
    assert not _imports_dev(_modules_imported(
        "from . import dispatch\nfrom .kernels import guard_record\nimport accel.devices",
        "accel"))


def test_importing_accel_and_its_modules_loads_no_dev_tool():
    modules = sorted(f"{pkg}.{path.stem}" for pkg, path in _library_files()
                     if path.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('accel.dev')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert "accel.dispatch" in modules and "accel.kernels.cuda_jit" in modules


def test_accel_opcount_is_the_dev_module():
    from accel import opcount
    from accel.dev import opcount as dev_opcount

    assert opcount is dev_opcount and sys.modules["accel.opcount"] is dev_opcount
    backend = opcount.backend()
    assert isinstance(backend, dev_opcount.CountingBackend)
    with opcount.Count() as count:
        backend.xp.ones(3) + 1
    assert count.ops == {"ones": 1, "add": 1}


def test_the_install_ships_every_package_under_accel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.relative_to(ROOT).parts[:-1])
                for p in (ROOT / "accel").rglob("__init__.py")}
    assert "accel.dev" in packages
    assert packages | {"accel.kernels"} == set(config["packages"])
    assert config["package-dir"] == {"accel.kernels": "kernels"}
