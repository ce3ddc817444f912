"""accel.dev holds the measuring tools (opcount, cuda_compile): importing accel and every
library module leaves it unloaded (that no library module's source imports it is the floor
rule of tests/test_architecture.py), the install ships it, and ``accel.opcount`` is its
counting backend under the public name."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the installed packages and the folders they come from (pyproject's package-dir)
SOURCES = {"accel": ROOT / "accel", "accel.kernels": ROOT / "kernels"}
ALIAS = ROOT / "accel" / "opcount.py"  # the public name of accel.dev.opcount


def _library_files():
    for package, folder in SOURCES.items():
        for path in sorted(folder.glob("*.py")):
            if path != ALIAS:
                yield package, path


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
