"""The CUDA half of tests/test_kernels.py (its tests marked ``cuda``: one body per kernel test,
run on the CUDA twins), under Numba's CUDA simulator in a subprocess of its own:
NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is imported, and must not leak into the
other tests. Small sizes: the simulator runs every GPU thread as a Python thread.

Run directly (``NUMBA_ENABLE_CUDASIM=1 python tests/test_kernels_cuda.py``) it runs those
tests and prints ``all CUDA twins match`` with the count; pytest runs it that way. On a GPU,
``ACCEL_CUDA_DEVICE=1 python tests/test_kernels_cuda.py`` runs the same tests on the device
(``benchmarks/gpu_check.py`` does).
"""

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
KERNEL_TESTS = HERE.parent / "test_kernels.py"


def test_cuda_kernels_under_the_simulator():
    """Every CUDA test of test_kernels.py passed (none skipped) and every op's CUDA kernel
    was launched."""
    from accel import dispatch

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("ACCEL_KERNELS", None)
    proc = subprocess.run([sys.executable, str(HERE)], env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    done = re.search(r"all CUDA twins match: (\d+) of (\d+) tests passed", proc.stdout)
    assert done, out
    assert int(done[1]) == int(done[2]) > 0, out  # passed, of those selected
    launched = dict(re.findall(r"^launched (\w+) (\d+)$", proc.stdout, re.MULTILINE))
    assert set(launched) == {op.kernel for op in dispatch.OPS.values()}, out


def test_optimizer_twins_read_alike():
    """The CPU and CUDA optimizer kernels share their argument lists and bodies (bar the loop
    header). Read as source text: neither module is imported, nothing compiles."""
    import ast

    def functions(name):
        path = HERE.parents[1] / "kernels" / f"{name}.py"
        tree = ast.parse(path.read_text())
        src = path.read_text()
        out = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name != "launch":
                seg = ast.get_source_segment(src, node).splitlines()
                loop = next(k for k, line in enumerate(seg) if "for i in " in line)
                out[node.name] = (seg[0], seg[1:loop], seg[loop + 1:])
        return out

    cpu, cuda = functions("optim_cpu"), functions("optim_cuda")
    assert cpu.keys() == cuda.keys() == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                         "adadelta", "adam"}
    for name in cpu:
        assert cpu[name] == cuda[name], name


class _Tally:
    """A pytest plugin: the outcome of each test and the CUDA launches each made."""

    def __init__(self):
        self.collected, self.outcomes, self.launched = 0, Counter(), Counter()

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.outcome] += 1
        if report.when == "call":  # test_kernels.py resets the counts before each test
            from accel import dispatch

            self.launched.update({op: n for (op, path), n in dispatch.calls().items()
                                  if path == "cuda"})


def main():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and \
            os.environ.get("ACCEL_CUDA_DEVICE") != "1":
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (or ACCEL_CUDA_DEVICE=1 on a GPU)")
    tally = _Tally()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "cuda", str(KERNEL_TESTS)],
                       plugins=[tally])
    for op, n in sorted(tally.launched.items()):
        print(f"launched {op} {n}")
    passed = tally.outcomes["passed"]
    if code != 0 or not tally.collected or passed != tally.collected:
        sys.exit(f"CUDA twins: {passed} of {tally.collected} tests passed "
                 f"({dict(tally.outcomes)}, pytest exit code {int(code)})")
    print(f"all CUDA twins match: {passed} of {tally.collected} tests passed")


if __name__ == "__main__":
    main()
