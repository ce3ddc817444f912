"""CUDA kernel twins (accel.kernels.*_cuda) against the xp reference, under Numba's CUDA
simulator in a subprocess of its own (NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda
is imported, and must not leak into the other tests). Small sizes: the simulator runs every
GPU thread as a Python thread.

Run directly (``NUMBA_ENABLE_CUDASIM=1 python tests/test_kernels_cuda.py``) it performs the
checks and prints one line per kernel; pytest runs it that way. On a GPU,
``ACCEL_CUDA_DEVICE=1 python tests/test_kernels_cuda.py`` runs the same checks on the device
(``benchmarks/gpu_check.py`` does).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import bn_backward

HERE = Path(__file__).resolve()


def test_cuda_kernels_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("ACCEL_KERNELS", None)
    proc = subprocess.run([sys.executable, str(HERE)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all CUDA twins match" in proc.stdout, proc.stdout + proc.stderr


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


# -- the checks, run in the simulator process


def _check_optimizers(dispatch, functional):
    """Each rule over steps, weight decay on the first ``decayed`` elements (all, none, a
    leading block), gradients scaled by a clip factor below 1."""
    rng = np.random.default_rng(0)
    cases = {  # scalars before ``decayed``
        "sgd": (functional.sgd, 0, (0.05, 0.01)),
        "momentum": (functional.momentum, 1, (0.05, 0.9, 0.9, 1e-3)),
        "nesterov": (functional.nesterov, 1, (0.05, 0.8, 1e-3)),
        "adagrad": (functional.adagrad, 1, (0.05, 1e-7, 1e-2)),
        "rmsprop": (functional.rmsprop, 1, (0.01, 0.99, 1e-7, 1e-3)),
        "adadelta": (functional.adadelta, 2, (1.0, 0.9, 1e-6, 1e-2)),
        "adam": (functional.adam, 2, (0.9, 0.999, 1e-8, 0.01, 7, True, 1e-2, 0.999)),
    }
    steps = int(os.environ.get("ACCEL_CUDASIM_STEPS", "100"))
    clip = np.array([0.7, 0.0])
    for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-12)):
        for name, (rule, n_state, scalars) in cases.items():
            for size in (0, 1, 37):
                p = rng.standard_normal(size).astype(dtype)
                state = [np.zeros(size, dtype) for _ in range(n_state)]
                p_ref, state_ref = p.copy(), [s.copy() for s in state]
                for step in range(steps if size == 37 else 2):
                    g = rng.standard_normal(size).astype(dtype)
                    decayed = (size, 0, 20)[step % 3]
                    dispatch.call(rule, p, g, *state, clip, scalars=(*scalars, decayed),
                                  target="cuda")
                    assert dispatch.last_path(name) == "cuda"
                    rule(p_ref, g, *state_ref, clip, *scalars, decayed)
                for a, b in zip([p, *state], [p_ref, *state_ref]):
                    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 0.1)
            print(f"ok {name} {np.dtype(dtype).name}")


def _check_batchnorm(dispatch, functional):
    rng = np.random.default_rng(1)
    for dtype, tol in ((np.float32, 2e-5), (np.float64, 1e-11)):
        # N = 1..3, D = 1, and N, D not multiples of the (patched) 8-column x 4-lane tile
        for n, d in ((1, 1), (2, 3), (3, 1), (9, 37), (13, 8)):
            x = (rng.standard_normal((n, d)) * 3 + 5).astype(dtype)
            gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
            rm, rv = rng.standard_normal(d).astype(dtype), (rng.random(d) + 0.5).astype(dtype)
            dy = rng.standard_normal((n, d)).astype(dtype)
            rm_r, rv_r = rm.copy(), rv.copy()
            out, mean, invstd = dispatch.call(functional.batchnorm_forward_train, x, gamma,
                                              beta, rm, rv, scalars=(0.9, 1e-5), target="cuda")
            ref = functional.batchnorm_forward_train(x, gamma, beta, rm_r, rv_r, 0.9, 1e-5)
            for a, b in zip((out, mean, invstd, rm, rv), (*ref, rm_r, rv_r)):
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
            ev = dispatch.call(functional.batchnorm_forward_eval, x, gamma, beta, rm, rv,
                               scalars=(1e-5,), target="cuda")
            np.testing.assert_allclose(
                ev, functional.batchnorm_forward_eval(x, gamma, beta, rm, rv, 1e-5), rtol=tol,
                atol=tol)
            dx, dgamma, dbeta = bn_backward(
                lambda *a: dispatch.call(functional.batchnorm_backward, *a, target="cuda"),
                dy, x, gamma, mean, invstd)
            assert set(dispatch.last_path().values()) == {"cuda"}, dispatch.last_path()
            for a, b in zip((dx, dgamma, dbeta), bn_backward(functional.batchnorm_backward,
                                                             dy, x, gamma, mean, invstd)):
                np.testing.assert_allclose(a, b, rtol=10 * tol, atol=10 * tol * n)
        print(f"ok batchnorm {np.dtype(dtype).name}")


def _check_layers(dispatch, functional):
    rng = np.random.default_rng(2)
    for dtype, tol in ((np.float32, 2e-6), (np.float64, 1e-12)):
        for n, d in ((0, 3), (1, 1), (3, 2), (19, 37)):  # d > COLS: two column tiles
            b = rng.standard_normal(d).astype(dtype)
            dout = rng.standard_normal((n, d)).astype(dtype)
            for act in (functional.RELU, functional.SIGMOID, functional.TANH):
                y = (rng.standard_normal((n, d)) * 4).astype(dtype)
                y_ref = y.copy()
                dispatch.call(functional.bias_activation, y, b, scalars=(act,), target="cuda")
                functional.bias_activation(y_ref, b, act)
                np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
                db, db_ref = np.full(d, np.nan, dtype), np.full(d, np.nan, dtype)
                dy = dispatch.call(functional.activation_backward_bias, dout, y, db,
                                   scalars=(act,), target="cuda")
                dy_ref = functional.activation_backward_bias(dout, y, db_ref, act)
                np.testing.assert_allclose(dy, dy_ref, rtol=tol, atol=tol)
                np.testing.assert_allclose(db, db_ref, rtol=10 * tol, atol=10 * tol * max(n, 1))
            if n:
                x = (rng.standard_normal((n, d)) * 5).astype(dtype)
                t = rng.integers(0, d, n)
                losses, dx = dispatch.call(functional.softmax_cross_entropy, x, t,
                                           target="cuda")
                ref = functional.softmax_cross_entropy(x, t)
                np.testing.assert_allclose(losses, ref[0], rtol=tol, atol=tol)
                np.testing.assert_allclose(dx, ref[1], rtol=tol, atol=tol)
            assert set(dispatch.last_path().values()) == {"cuda"}, dispatch.last_path()
            g, w = rng.standard_normal(n * d).astype(dtype), rng.standard_normal(n * d).astype(
                dtype)
            ref = g.copy()
            dispatch.call(functional.scaled_add, g, w, scalars=(1e-3,), target="cuda")
            assert not n or dispatch.last_path("scaled_add") == "cuda"
            functional.scaled_add(ref, w, 1e-3)
            np.testing.assert_allclose(g, ref, rtol=tol, atol=tol)
        print(f"ok layers {np.dtype(dtype).name}")


def _check_skipping(dispatch, functional):
    """An optimizer kernel reads the guard's record: a step it marks skipped changes nothing,
    and Adam's bias correction counts t less the skipped steps."""
    from accel.kernels import guard_record as R

    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        p = rng.standard_normal(37).astype(dtype)
        g = rng.standard_normal(37).astype(dtype)
        m, v = np.zeros_like(p), np.zeros_like(p)
        record = np.zeros(R.FLAGS, np.int64)
        record[R.SKIP] = 1
        before = [p.copy(), m.copy(), v.copy()]
        clip = functional.clip_array(p)
        scalars = (0.9, 0.999, 1e-8, 0.01, 4, False, 0.0, 1.0, 37)
        dispatch.call(functional.adam, p, g, m, v, clip, scalars=scalars, target="cuda",
                      record=record)
        for a, b in zip((p, m, v), before):
            np.testing.assert_array_equal(a, b)
        record[R.SKIP], record[R.SKIPPED] = 0, 2  # t = 4 with 2 skipped: the 2nd update
        dispatch.call(functional.adam, p, g, m, v, clip, scalars=scalars, target="cuda",
                      record=record)
        functional.adam(before[0], g, before[1], before[2], clip, 0.9, 0.999, 1e-8, 0.01, 2,
                        False, 0.0, 1.0, 37)
        tol = 1e-6 if dtype == np.float32 else 1e-12
        for a, b in zip((p, m, v), before):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    print("ok optimizer record")


def _check_clip(dispatch, functional):
    """Gradient clipping's factor: several blocks (their sums added by the last block), one
    buffer or several accumulated in clip[1], against the reference."""
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        for sizes in ((0,), (1,), (37,), (19, 5, 40)):
            gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
            for max_norm in (0.5, 1e9):
                clip, clip_ref = np.array([3.0, 0.0]), np.array([3.0, 0.0])
                for k, g in enumerate(gs):
                    scalars = (max_norm, functional.CLIP_EPS, k == len(gs) - 1)
                    dispatch.call(functional.clip_factor, g, clip, scalars=scalars,
                                  target="cuda")
                    assert dispatch.last_path("clip_factor") == "cuda"
                    functional.clip_factor(g, clip_ref, *scalars)
                    np.testing.assert_allclose(clip, clip_ref, rtol=1e-12)
                norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in gs))
                assert clip[1] == 0.0
                np.testing.assert_allclose(clip[0], min(1.0, max_norm / (norm + 1e-6)),
                                           rtol=1e-12)
        print(f"ok clip_factor {np.dtype(dtype).name}")


def _check_guard(dispatch, functional):
    """The guard's last-block decision (several blocks), against its reference, over steps."""
    from accel.kernels import guard_record as R

    for dtype in (np.float32, np.float64):
        for sticky in (True, False):
            rng = np.random.default_rng(5)
            sizes, n_buffers = (5, 9, 1, 4), 2
            g = rng.standard_normal(sum(sizes)).astype(dtype)
            args = [np.asarray(1.0, dtype), g,
                    np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    rng.standard_normal(3 * n_buffers).astype(dtype),
                    np.arange(0, 3 * n_buffers + 1, 3, dtype=np.int64),
                    np.zeros(3 * n_buffers, dtype),
                    np.zeros(R.size(len(sizes), n_buffers, 3), np.int64)]
            ref = [a.copy() for a in args]
            for it in range(1, 6):
                fresh = rng.standard_normal(g.size).astype(dtype)
                if it == 2:
                    fresh[[1, 12]] = (np.nan, np.inf)
                new_buffers = rng.standard_normal(3 * n_buffers).astype(dtype)
                for a in (args, ref):
                    a[1][...] = fresh
                    a[3][...] = new_buffers
                dispatch.call(functional.nonfinite_guard, *args, scalars=(it, sticky),
                              target="cuda")
                assert dispatch.last_path("nonfinite_guard") == "cuda"
                functional.nonfinite_guard(*ref, it, sticky)
                for k in (3, 5, 6):  # buffers, saved, record
                    np.testing.assert_array_equal(args[k], ref[k], err_msg=f"{k} at {it}")
            assert args[6][R.FIRST] == 2 and args[6][R.SKIPPED] == (4 if sticky else 1)
        print(f"ok guard {np.dtype(dtype).name}")


def main():
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if not simulator and os.environ.get("ACCEL_CUDA_DEVICE") != "1":
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (or ACCEL_CUDA_DEVICE=1 on a GPU)")
    from accel.kernels import batchnorm_cuda, clip_cuda, cuda_jit, guard_cuda

    from accel import dispatch, functional

    cuda_jit.THREADS_PER_BLOCK = 8  # several blocks and a grid-stride wrap at these sizes
    cuda_jit.MAX_BLOCKS = 2
    if simulator:  # the simulator reads these at run time; a real compile has 32 x 16
        batchnorm_cuda.COLS, batchnorm_cuda.ROWS = 8, 4
        guard_cuda.THREADS, guard_cuda.MAX_BLOCKS = 4, 3  # 19 gradients: 3 blocks, a wrap
        clip_cuda.THREADS, clip_cuda.MAX_BLOCKS = 4, 3  # 37 and 40: 3 blocks, a wrap
    _check_optimizers(dispatch, functional)
    _check_skipping(dispatch, functional)
    _check_batchnorm(dispatch, functional)
    _check_layers(dispatch, functional)
    _check_guard(dispatch, functional)
    _check_clip(dispatch, functional)
    print("all CUDA twins match")


if __name__ == "__main__":
    main()
