"""Every CUDA kernel compiles for real GPUs (sm_80, sm_90), here, without one.

``benchmarks/gpu_check.py --compile-only`` runs once, in a subprocess (it compiles with
``accel.dev.cuda_compile.compile_all``: PTX from NVVM, then ptxas or nvJitLink for registers and
spills), and the tests read its JSON: every kernel × dtype × compute capability is listed and
ok, has a PTX ``.entry``, spills nothing and fits its launch's block. NVVM comes with the dev
extra (``numba-cuda[cu13]``); where it cannot load the tests fail and say why, unless
``ACCEL_SKIP_CUDA_COMPILE=1`` opts out.
"""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accel import dispatch
from accel import functional as F
from accel.dev import cuda_compile

ROOT = Path(__file__).resolve().parents[1]
OPT_OUT = "ACCEL_SKIP_CUDA_COMPILE"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{OPT_OUT}=1: CUDA compile checks opted out")
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--compile-only", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    path = out / "gpu_check-compile-only.json"
    assert path.exists(), proc.stdout + proc.stderr
    rep = json.loads(path.read_text())
    rep["compile"] = rep["stages"]["compile"]
    problem = rep["compile"]["nvvm_problem"]
    if problem:
        pytest.fail(f"cannot compile CUDA kernels: {problem} (set {OPT_OUT}=1 to opt out)")
    rep["returncode"], rep["output"] = proc.returncode, proc.stdout + proc.stderr
    rep["md"] = (out / "gpu_check-compile-only.md").read_text()
    return rep


def _expected():
    return {(op.kernel, dtype, f"{cc[0]}.{cc[1]}") for _, op, _ in cuda_compile.cuda_kernels()
            for dtype in cuda_compile.DTYPES for cc in cuda_compile.CCS}


def test_every_kernel_compiles_for_every_dtype_and_cc(report):
    rows = report["compile"]["rows"]
    assert report["gpu"] is None and report["gpu_skipped"]
    assert {(r["kernel"], r["dtype"], r["cc"]) for r in rows} == _expected()
    assert len(rows) == len(_expected()) == 16 * 2 * 2
    bad = [(r["kernel"], r["dtype"], r["cc"], r["error"]) for r in rows if not r["ok"]]
    assert not bad, bad
    assert all(r["ptx_entries"] >= 1 for r in rows)
    assert report["returncode"] == 0, report["output"][-3000:]
    assert "64/64 ok" in report["md"]


def test_no_kernel_spills_and_each_fits_its_block(report):
    rows = report["compile"]["rows"]
    assert all("registers" in r for r in rows), "no assembler report (ptxas or nvJitLink)"
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} sm_{r['cc']}: {r['registers']} registers"
        assert r["spill_store_bytes"] == r["spill_load_bytes"] == 0, where
        assert r["stack_bytes"] == 0, where
        assert r["fits_block"], f"{where} x {r['threads_per_block']} threads"


def test_signatures_are_the_dispatch_launch_types():
    sigs = {}
    for ref, op, kernel in cuda_compile.cuda_kernels():
        _, kinds, n = cuda_compile.launch_arguments(ref, op, kernel, "float32")
        sigs[op.kernel] = (", ".join(map(str, cuda_compile.signature(kinds))), n)
    f, i, d = "array(float32, 1d, C)", "array(int64, 1d, C)", "array(float64, 1d, C)"
    # p, g, m, v, the clip factor, 9 scalars (decayed last), the guard's record
    assert sigs["adam"] == (", ".join([f] * 4 + [d] + ["float64"] * 9 + [i]), 5)
    assert sigs["adadelta"] == (", ".join([f] * 4 + [d] + ["float64"] * 5 + [i]), 5)
    assert sigs["sgd"] == (", ".join([f, f, d, "float64", "float64", "float64", i]), 3)
    # g, clip, max_norm, eps, last, then the blocks' sums and the ticket
    assert sigs["clip_factor"] == (", ".join([f, d] + ["float64"] * 3 + [d, i]), 2)
    assert sigs["nonfinite_guard"] == (", ".join(
        [f, f, i, f, i, f, i, "float64", "float64", "array(float64, 1d, C)", i]), 7)
    assert sigs["softmax_cross_entropy"] == (
        "array(float32, 2d, C), array(int64, 1d, C), array(float32, 1d, C), "
        "array(float32, 2d, C)", 2)
    m, v = "array(float32, 2d, C)", "array(float32, 1d, C)"
    assert sigs["batchnorm_backward"] == (", ".join([m, m, v, v, v, v, v, m]), 7)
    assert sigs["batchnorm_forward_train"] == (
        ", ".join([m, v, v, v, v, "float64", "float64", m, v, v]), 5)
    assert sigs["bias_activation"] == (f"{m}, {v}, float64", 2)


def test_a_kernel_that_does_not_type_fails():
    from accel.kernels import cuda_jit
    @cuda_jit.jit
    def broken(x, out):
        out[0] = x[0].no_such_attribute

    op = dispatch.Op("layers", "broken", "r1 o1", outputs=lambda a: [(1,)], flat=True)
    _, kinds, _ = cuda_compile.launch_arguments(lambda x: None, op, broken, "float64")
    with pytest.raises(Exception, match="no_such_attribute") as err:
        cuda_compile.compile_ptx(broken, cuda_compile.signature(kinds), (8, 0))
    assert type(err.value).__name__ == "TypingError"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_each_kernel_takes_the_parameters_its_op_declares(target):
    """The reference's parameters, then the kernel's own: as many as ``Op.spec`` lists."""
    for ref, op in dispatch.OPS.items():
        kernel = dispatch.kernels(op.family, target).KERNELS[op.kernel]
        names = list(inspect.signature(kernel.py_func).parameters)
        ref_names = list(inspect.signature(ref).parameters)
        assert names[:len(ref_names)] == ref_names, op.kernel
        assert len(names) == len(op.params), (op.kernel, names, op.spec)
        # the reference's: arrays and scalars; the kernel's own: outputs, workspaces, record
        assert len(op.roles.rstrip("ozk")) == len(ref_names), (op.kernel, op.spec)


def test_an_op_declaration_reads_as_documented():
    op = dispatch.OPS[F.softmax_cross_entropy]
    P = dispatch.Param
    assert op.params == (P("r", "f", 2), P("r", "l", 1), P("o", "f", 1), P("o", "f", 2))
    assert (op.roles, op.n_arrays, op.labels, op.ints, op.doubles) == ("rroo", 2, (1,), (), ())
    adam = dispatch.OPS[F.adam]
    assert adam.roles == "wrwwr" + "s" * 9 + "k" and adam.record and adam.doubles == (4,)
    guard = dispatch.OPS[F.nonfinite_guard]
    assert guard.ints == (2, 4, 6) and [p.dtype("float32") for _, p in guard.work_params] == [
        np.float64, np.int64]
    bn = dispatch.OPS[F.batchnorm_backward]
    x, v = np.zeros((5, 3)), np.zeros(3)
    assert bn.shapes([x, x, v, v, v, v, v]) == [(5, 3)] * 2 + [(3,)] * 5
    assert bn.outputs([x]) == [(5, 3)]


@pytest.mark.parametrize("spec, kw, match", [
    ("r2 x1", {}, "parameter 'x1' in 'r2 x1'"),
    ("r2 r3", {}, "parameter 'r3'"),
    ("s1 r2", {}, "parameter 's1'"),
    ("r2 s r1", {}, "must list the reference's arrays"),
    ("r1 zd1", {}, r"z: 0 in work"),
    ("r2 w1 s", {"flat": True}, "a flat op's kernel takes 1-D arrays"),
    ("r1 o1", {"flat": True}, "outputs="),
])
def test_a_bad_declaration_is_refused(spec, kw, match):
    with pytest.raises(ValueError, match=match):
        dispatch.Op("layers", "k", spec, **kw)
