"""Fused kernels (accel.kernels.*_cpu and *_cuda through accel.dispatch) against the xp
reference. A test that takes ``target`` runs one body on each target (conftest.Target): the
CPU kernel's parallel and serial compiles here, and the CUDA twin under Numba's simulator in a
process of its own (tests/test_kernels_cuda.py runs the tests marked ``cuda``)."""

import subprocess
import sys

import numpy as np
import pytest
from accel.kernels import guard_record as R
from conftest import assert_close, bn_backward, on_targets

from accel import MultiLayerNet, dispatch, functional, layers, optim
from accel import functional as F

TOL = {np.float32: dict(rtol=1e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-14)}
# a GPU's exp, log and tanh, and its fused multiply-adds, differ from NumPy's by an ulp or two
CUDA_TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


def tolerance(target, dtype):
    return (CUDA_TOL if target.name == "cuda" else TOL)[dtype]

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),
    "sgd-wd": lambda: optim.SGD(lr=0.05, weight_decay=0.01),
    "momentum": lambda: optim.Momentum(lr=0.05, momentum=0.9),
    "momentum-damp-wd": lambda: optim.Momentum(lr=0.05, momentum=0.9, dampening=0.9,
                                               weight_decay=1e-3),
    "nesterov-wd": lambda: optim.Nesterov(lr=0.05, momentum=0.8, weight_decay=1e-3),
    "adagrad": lambda: optim.AdaGrad(lr=0.05),
    "rmsprop-wd": lambda: optim.RMSProp(lr=0.01, weight_decay=1e-3),
    "adam": lambda: optim.Adam(lr=0.01),
    "adam-folded-wd": lambda: optim.Adam(lr=0.01, eps=1e-7, folded=True, weight_decay=1e-2),
    "adamw": lambda: optim.AdamW(lr=0.01, weight_decay=0.05),
    "adamw-mask-clip": lambda: optim.AdamW(lr=0.01, weight_decay=0.05, decay_mask=["W"],
                                           clip_norm=3.0),
    "adadelta": lambda: optim.AdaDelta(),
    "adadelta-wd-clip": lambda: optim.AdaDelta(lr=0.5, rho=0.95, weight_decay=1e-2,
                                               clip_norm=2.0),
    "sgd-clip": lambda: optim.SGD(lr=0.05, clip_norm=1.0),
    "momentum-mask-clip": lambda: optim.Momentum(lr=0.05, weight_decay=1e-2,
                                                 decay_mask=["b", "one"], clip_norm=4.0),
}


@pytest.fixture(autouse=True)
def _fused(monkeypatch):
    monkeypatch.delenv("ACCEL_KERNELS", raising=False)
    dispatch.reset_calls()


def _run(opt, params, grads_seq, reference):
    for grads in grads_seq:
        if reference:
            with dispatch.use("reference"):
                opt.update(params, grads)
        else:
            opt.update(params, grads)


@pytest.mark.parametrize("target", ["cpu-parallel", "cpu-serial"], indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_kernel_matches_reference(name, dtype, target):
    """The optimizers' update (NumPy arrays: the CPU kernels) against the reference path."""
    rng = np.random.default_rng(0)
    shapes = {"W": (31, 17), "b": (17,), "one": (1,)}
    p0 = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads_seq = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
                 for _ in range(120)]
    fused, ref = OPTIMIZERS[name](), OPTIMIZERS[name]()
    pf = {k: v.copy() for k, v in p0.items()}
    pr = {k: v.copy() for k, v in p0.items()}
    _run(fused, pf, grads_seq, reference=False)
    _run(ref, pr, grads_seq, reference=True)
    rule = dispatch.OPS[type(fused).rule].kernel
    assert dispatch.calls()[(rule, "cpu")] == 120 * len(shapes)
    assert dispatch.calls()[(rule, "reference")] == 120 * len(shapes)
    if fused.clip_norm is not None:  # one share of the global norm per array
        assert dispatch.calls()[("clip_factor", "cpu")] == 120 * len(shapes)
        assert dispatch.calls()[("clip_factor", "reference")] == 120 * len(shapes)
    for k in shapes:
        assert pf[k].dtype == dtype
        assert_close(pf[k], pr[k], **TOL[dtype])
        for sf, sr in zip(fused.state[k], ref.state[k]):
            assert sf.dtype == dtype
            assert_close(sf, sr, **TOL[dtype])


OPTIMIZER_RULES = {  # name → (rule, state arrays, scalars before ``decayed``)
    "sgd": (functional.sgd, 0, (0.05, 0.01)),
    "momentum": (functional.momentum, 1, (0.05, 0.9, 0.9, 1e-2)),
    "nesterov": (functional.nesterov, 1, (0.05, 0.8, 1e-2)),
    "adagrad": (functional.adagrad, 1, (0.05, 1e-7, 1e-2)),
    "rmsprop": (functional.rmsprop, 1, (0.01, 0.99, 1e-7, 1e-2)),
    "adadelta": (functional.adadelta, 2, (1.0, 0.9, 1e-6, 1e-2)),
    "adam": (functional.adam, 2, (0.9, 0.999, 1e-8, 0.01, 5, False, 1e-2, 0.999)),
    "adam-folded": (functional.adam, 2, (0.9, 0.999, 1e-8, 0.01, 7, True, 1e-2, 0.999)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", list(OPTIMIZER_RULES))
def test_decayed_block_and_clip_factor_match_reference(rule, dtype, target):
    """A flat buffer whose first ``decayed`` elements decay (a network's weight block), the
    rest not, and a clip factor below 1: the kernel against the reference, over steps."""
    rule, n_state, scalars = OPTIMIZER_RULES[rule]
    size, block = target.small((1001, 700), (37, 20))
    rng = np.random.default_rng(1)
    p = rng.standard_normal(size).astype(dtype)
    state = [np.zeros_like(p) for _ in range(n_state)]
    p_ref, state_ref = p.copy(), [a.copy() for a in state]
    clip = np.array([0.6, 0.0])
    for decayed in (block, block, 0, size, block):
        g = rng.standard_normal(p.size).astype(dtype)
        target(rule, p, g, *state, clip, scalars=(*scalars, decayed))
        rule(p_ref, g, *state_ref, clip, *scalars, decayed)
    for a, b in zip([p, *state], [p_ref, *state_ref]):
        assert_close(a, b, **tolerance(target, dtype))
    # one more step from the same state, with the block decayed and with none decayed: the
    # elements past the block take the same bits, those in it do not
    g = rng.standard_normal(p.size).astype(dtype)
    after = []
    for decayed in (block, 0):
        q, st = p.copy(), [a.copy() for a in state]
        target(rule, q, g, *st, clip, scalars=(*scalars, decayed))
        after.append(q)
    np.testing.assert_array_equal(after[0][block:], after[1][block:])
    assert (after[0][:block] != after[1][:block]).mean() > 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_kernel_reads_the_guard_record(dtype, target):
    """A step the guard's record marks skipped changes nothing, and Adam's bias correction
    counts t less the skipped steps."""
    rng = np.random.default_rng(4)
    p, g = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    clip = functional.clip_array(p)
    record = np.zeros(R.FLAGS, np.int64)
    record[R.SKIP] = 1
    before = [p.copy(), m.copy(), v.copy()]
    scalars = (0.9, 0.999, 1e-8, 0.01, 4, False, 0.0, 1.0, 37)
    target(functional.adam, p, g, m, v, clip, scalars=scalars, record=record)
    for a, b in zip((p, m, v), before):
        np.testing.assert_array_equal(a, b)
    record[R.SKIP], record[R.SKIPPED] = 0, 2  # t = 4 with 2 skipped: the 2nd update
    target(functional.adam, p, g, m, v, clip, scalars=scalars, record=record)
    p_ref, m_ref, v_ref = before
    functional.adam(p_ref, g, m_ref, v_ref, clip, 0.9, 0.999, 1e-8, 0.01, 2, False, 0.0, 1.0, 37)
    for a, b in zip((p, m, v), before):
        assert_close(a, b, **tolerance(target, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,sizes", on_targets(
    cpu=[((0,),), ((1,),), ((37,),), ((50_000, 3, 20_000),)],
    cuda=[((1,),), ((19, 5, 40),)]), indirect=["target"])  # the simulator: 3 blocks, a wrap
def test_clip_factor_kernel_matches_reference(sizes, dtype, target):
    """Σg² over one buffer or several (accumulated in clip[1], decided by the last call):
    clip[0] = min(1, c/(‖g‖ + 1e-6)), clip[1] back to 0; against the reference and the
    norm numpy computes."""
    rng = np.random.default_rng(sum(sizes))
    gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in gs))
    for max_norm in (0.5, 1e9):
        clip, clip_ref = np.array([7.0, 0.0]), np.array([7.0, 0.0])
        for k, g in enumerate(gs):
            last = k == len(gs) - 1
            target(functional.clip_factor, g, clip,
                   scalars=(max_norm, functional.CLIP_EPS, last))
            functional.clip_factor(g, clip_ref, max_norm, functional.CLIP_EPS, last)
            if not last:  # the running sum so far
                assert clip[0] == 7.0 and clip[1] == pytest.approx(clip_ref[1], rel=1e-12)
        np.testing.assert_allclose(clip, clip_ref, rtol=1e-12)
        assert clip[1] == 0.0
        assert clip[0] == pytest.approx(min(1.0, max_norm / (norm + 1e-6)), rel=1e-12)


def test_clip_factor_does_not_depend_on_threads():
    """Chunks split by size, added in chunk order: 1 thread, 2 threads and the serial twin
    give the same bits; NaN in the gradient gives a NaN factor (as torch's clamp)."""
    import numba
    from accel.kernels import clip_cpu

    g = np.random.default_rng(3).standard_normal(5 * clip_cpu.CHUNK + 7).astype(np.float32)

    def factor(kernel):
        clip = np.array([1.0, 0.0])
        kernel(g, clip, 10.0, 1e-6, True, np.zeros(64), np.zeros(1, np.int64))
        return clip

    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = factor(clip_cpu.KERNELS["clip_factor"])
    finally:
        numba.set_num_threads(threads)
    many = factor(clip_cpu.KERNELS["clip_factor"])
    serial = factor(clip_cpu.SERIAL["clip_factor"])
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(one, serial)
    assert 0 < one[0] < 1
    g[12345] = np.nan
    assert np.isnan(factor(clip_cpu.KERNELS["clip_factor"])[0])
    clip = np.array([1.0, 0.0])
    functional.clip_factor(g, clip, 10.0, 1e-6, True)
    assert np.isnan(clip[0])


def test_one_kernel_call_per_step_on_a_network():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    t = rng.integers(0, 4, 16)
    nets = [MultiLayerNet(12, [10, 8], 4, weight_decay=0.01, seed=3) for _ in range(2)]
    opts = [optim.Adam(lr=1e-2), optim.Adam(lr=1e-2)]
    for _ in range(5):
        for i, (net, opt) in enumerate(zip(nets, opts)):
            if i == 1:
                with dispatch.use("reference"):
                    opt.update(net.params, net.gradient(x, t))
                continue
            grads = net.gradient(x, t)
            dispatch.reset_calls()
            opt.update(net.params, grads)
            assert dispatch.calls() == {("adam", "cpu"): 1}, dispatch.calls()
    assert set(opts[0].state) == {"flat"}
    assert_close(nets[0].params.flat, nets[1].params.flat, rtol=1e-5, atol=1e-6)


def test_one_kernel_call_counted_by_a_patched_kernel(monkeypatch):
    calls = []
    mod = dispatch.kernels("optim", "cpu")
    real = mod.SERIAL["momentum"]  # a small net: the serial compile
    monkeypatch.setitem(mod.SERIAL, "momentum",
                        lambda *a: (calls.append(a[0].size), real(*a))[1])
    net = MultiLayerNet(6, [5, 5], 3, seed=0)
    x, t = np.ones((4, 6), np.float32), np.array([0, 1, 2, 0])
    optim.Momentum(lr=0.1).update(net.params, net.gradient(x, t))
    assert calls == [net.params.flat.size]


@pytest.mark.parametrize("rule", list(OPTIMIZER_RULES))
def test_optimizer_sizes(rule, target):
    """Sizes 0, 1, 2 (fewer elements than threads), two steps: decayed all, then none."""
    rule, n_state, scalars = OPTIMIZER_RULES[rule]
    for size in (0, 1, 2):
        rng = np.random.default_rng(size)
        p = rng.standard_normal(size).astype(np.float32)
        state = [np.zeros_like(p) for _ in range(n_state)]
        p_ref, state_ref = p.copy(), [a.copy() for a in state]
        clip = functional.clip_array(p)
        for decayed in (size, 0):
            g = rng.standard_normal(size).astype(np.float32)
            target(rule, p, g, *state, clip, scalars=(*scalars, decayed))
            rule(p_ref, g, *state_ref, clip, *scalars, decayed)
        for a, b in zip([p, *state], [p_ref, *state_ref]):
            assert_close(a, b, **tolerance(target, np.float32))


def test_noncontiguous_and_other_dtype_inputs_are_copied():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((40, 6))
    p = base[:, ::2]  # written and strided: copied in, written back
    g = np.asfortranarray(rng.standard_normal((40, 3)))  # read-only and not C-contiguous
    v = np.zeros((40, 3))
    p_ref, v_ref = p.copy(), v.copy()
    dispatch.optimizer_step(functional.momentum, p, g, (v,), (0.1, 0.9, 0.0, 0.01, p.size))
    functional.momentum(p_ref, g, v_ref, functional.clip_array(p), 0.1, 0.9, 0.0, 0.01, p.size)
    assert dispatch.last_path("momentum") == "cpu"
    assert_close(base[:, ::2], p_ref, rtol=1e-12)
    assert_close(v, v_ref, rtol=1e-12)
    # a float64 gradient for float32 parameters is cast (copied), not misread
    p32 = rng.standard_normal(50).astype(np.float32)
    g64 = rng.standard_normal(50)
    p_ref = p32.copy()
    dispatch.optimizer_step(functional.sgd, p32, g64, (), (0.1, 0.0, 0))
    functional.sgd(p_ref, g64.astype(np.float32), functional.clip_array(p32), 0.1, 0.0, 0)
    assert_close(p32, p_ref, rtol=1e-6)


def test_wrong_dtypes_are_refused_or_take_the_reference():
    p = np.ones(5, np.float32)
    with pytest.raises(TypeError, match="state\\[0\\] has dtype float64"):
        dispatch.optimizer_step(functional.adagrad, p, p.copy(), (np.zeros(5),),
                                (0.1, 1e-7, 0.0, 0))
    with pytest.raises(TypeError, match="float array"):
        dispatch.optimizer_step(functional.sgd, p, np.ones(5, np.int64), (), (0.1, 0.0, 0))
    with pytest.raises(ValueError, match="shape"):
        dispatch.optimizer_step(functional.sgd, p, np.ones(4, np.float32), (), (0.1, 0.0, 0))
    with pytest.raises(TypeError, match="clip must be a float64 array, got float32"):
        dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.1, 0.0, 0),
                                clip=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="clip has shape \\(1,\\), expected \\(2,\\)"):
        dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.1, 0.0, 0), clip=np.ones(1))
    p16 = np.ones(5, np.float16)  # no kernel takes float16: the reference runs
    dispatch.optimizer_step(functional.sgd, p16, np.ones(5, np.float16), (), (0.5, 0.0, 0))
    assert dispatch.last_path("sgd") == "reference"
    assert_close(p16, np.full(5, 0.5))


def test_the_switch(monkeypatch):
    p = np.ones(3)
    monkeypatch.setenv("ACCEL_KERNELS", "reference")
    dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.5, 0.0, 0))
    assert dispatch.last_path("sgd") == "reference"
    monkeypatch.setenv("ACCEL_KERNELS", "fused")
    dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.5, 0.0, 0))
    assert dispatch.last_path("sgd") == "cpu"
    with dispatch.use("reference"):
        dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.5, 0.0, 0))
    assert dispatch.last_path() == {"sgd": "reference"}
    monkeypatch.setenv("ACCEL_KERNELS", "fast")
    with pytest.raises(ValueError, match="ACCEL_KERNELS"):
        dispatch.optimizer_step(functional.sgd, p, p.copy(), (), (0.5, 0.0, 0))


def test_importing_accel_compiles_nothing():
    """No kernel module and not Numba: only the guard record's layout (plain constants)."""
    code = ("import sys, accel, accel.optim, accel.layers, accel.dispatch; "
            "print(sorted(m for m in sys.modules if m.startswith('accel.kernels')), "
            "'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['accel.kernels', 'accel.kernels.guard_record'] False"


# -- batch norm


def _bn_inputs(rng, n, d, dtype):
    x = (rng.standard_normal((n, d)) * 3 + 5).astype(dtype)
    gamma = rng.standard_normal(d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    rm = rng.standard_normal(d).astype(dtype)
    rv = rng.random(d).astype(dtype) + 0.5
    dy = rng.standard_normal((n, d)).astype(dtype)
    return x, gamma, beta, rm, rv, dy


BN_TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,n,d", on_targets(
    cpu=[(1, 1), (2, 3), (37, 70), (300, 5)],
    # N = 1..3, D = 1, and N, D not multiples of the simulator's 8-column x 4-lane tile
    cuda=[(1, 1), (2, 3), (3, 1), (9, 19), (13, 8)]), indirect=["target"])
def test_batchnorm_kernels_match_reference(n, d, dtype, target):
    rng = np.random.default_rng(n * 100 + d)
    x, gamma, beta, rm, rv, dy = _bn_inputs(rng, n, d, dtype)
    rm_r, rv_r = rm.copy(), rv.copy()
    out, mean, invstd = target(functional.batchnorm_forward_train, x, gamma, beta, rm, rv,
                               scalars=(0.9, 1e-5))
    ref = functional.batchnorm_forward_train(x, gamma, beta, rm_r, rv_r, 0.9, 1e-5)
    tol = BN_TOL[dtype]
    for a, b in zip((out, mean, invstd, rm, rv), (*ref, rm_r, rv_r)):
        assert a.dtype == dtype
        assert_close(a, b, **tol)
    grads = bn_backward(lambda *a: target(functional.batchnorm_backward, *a), dy, x, gamma,
                        mean, invstd)
    ref_grads = bn_backward(functional.batchnorm_backward, dy, x, gamma, ref[1], ref[2])
    for a, b in zip(grads, ref_grads):
        assert a.dtype == dtype
        assert_close(a, b, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * max(1, n))
    ev = target(functional.batchnorm_forward_eval, x, gamma, beta, rm, rv, scalars=(1e-5,))
    assert_close(ev, functional.batchnorm_forward_eval(x, gamma, beta, rm, rv, 1e-5), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_sums_do_not_depend_on_threads(dtype):
    """The column sums add row chunks in chunk order, so 1 thread, 2 threads and the serial
    twin give the same bits (n = 301: 4 chunks of 75-76 rows, whole 4-row blocks and a tail)."""
    import numba
    from accel.kernels import batchnorm_cpu

    rng = np.random.default_rng(9)
    x, gamma, beta, _, _, dy = _bn_inputs(rng, 301, 70, dtype)

    def run(fwd, bwd):
        rm, rv = np.zeros(70, dtype), np.ones(70, dtype)
        out, dx = np.empty_like(x), np.empty_like(x)
        mean, invstd, dgamma, dbeta = (np.empty(70, dtype) for _ in range(4))
        fwd(x, gamma, beta, rm, rv, 0.9, 1e-5, out, mean, invstd)
        bwd(dy, x, gamma, mean, invstd, dgamma, dbeta, dx)
        return out, mean, invstd, rm, rv, dgamma, dbeta, dx

    par, ser = batchnorm_cpu.KERNELS, batchnorm_cpu.SERIAL
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run(par["batchnorm_forward_train"], par["batchnorm_backward"])
    finally:
        numba.set_num_threads(threads)
    many = run(par["batchnorm_forward_train"], par["batchnorm_backward"])
    serial = run(ser["batchnorm_forward_train"], ser["batchnorm_backward"])
    for a, b, c in zip(one, many, serial):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_batchnorm_kernels_gradient_check():
    rng = np.random.default_rng(5)
    x, gamma, beta, rm, rv, dy = _bn_inputs(rng, 6, 4, np.float64)

    def loss(x, gamma, beta):
        out = dispatch.batchnorm_forward_train(x, gamma, beta, rm.copy(), rv.copy(), 0.9,
                                               1e-5)[0]
        return float((out * dy).sum())

    _, mean, invstd = dispatch.batchnorm_forward_train(x, gamma, beta, rm.copy(), rv.copy(),
                                                       0.9, 1e-5)
    dx, dgamma, dbeta = bn_backward(dispatch.batchnorm_backward, dy, x, gamma, mean, invstd)
    h = 1e-6
    for arr, grad in ((x, dx), (gamma, dgamma), (beta, dbeta)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + h
            up = loss(x, gamma, beta)
            arr[idx] = keep - h
            down = loss(x, gamma, beta)
            arr[idx] = keep
            num[idx] = (up - down) / (2 * h)
        rel = np.linalg.norm(grad - num) / (np.linalg.norm(grad) + np.linalg.norm(num))
        assert rel < 1e-7, rel


def test_batchnorm_noncontiguous_and_bad_input():
    rng = np.random.default_rng(7)
    x, gamma, beta, rm, rv, dy = _bn_inputs(rng, 20, 12, np.float64)
    xs = np.asfortranarray(x)[:, ::2]
    rm_s = np.zeros(12)[::2]  # written and strided: copied in, written back
    rm_r = np.zeros(6)
    out, mean, invstd = dispatch.batchnorm_forward_train(xs, gamma[:6], beta[:6], rm_s,
                                                         rv[:6].copy(), 0.9, 1e-5)
    ref = functional.batchnorm_forward_train(xs, gamma[:6], beta[:6], rm_r, rv[:6].copy(), 0.9,
                                         1e-5)
    assert_close(out, ref[0], rtol=1e-12)
    assert_close(rm_s, rm_r, rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match="running_var has dtype float32"):
        dispatch.batchnorm_forward_train(x, gamma, beta, rm, rv.astype(np.float32), 0.9, 1e-5)
    with pytest.raises(ValueError, match="shape"):
        dispatch.batchnorm_forward_train(x, gamma[:3], beta, rm, rv, 0.9, 1e-5)
    with pytest.raises(ValueError, match="\\(N, D\\)"):
        dispatch.batchnorm_forward_eval(x.reshape(20, 3, 4), gamma, beta, rm, rv, 1e-5)


def test_batchnorm_layer_takes_the_kernels():
    rng = np.random.default_rng(8)
    x, gamma, beta, rm, rv, dy = _bn_inputs(rng, 32, 10, np.float32)
    fused = layers.BatchNorm(gamma.copy(), beta.copy(), momentum=0.9, eps=1e-5)
    ref = layers.BatchNorm(gamma.copy(), beta.copy(), momentum=0.9, eps=1e-5)
    out = fused.forward(x, train=True)
    dx = fused.backward(dy)
    assert dispatch.last_path("batchnorm_forward_train") == "cpu"
    assert dispatch.last_path("batchnorm_backward") == "cpu"
    with dispatch.use("reference"):
        out_r = ref.forward(x, train=True)
        dx_r = ref.backward(dy)
    assert_close(out, out_r, rtol=2e-5, atol=2e-5)
    assert_close(dx, dx_r, rtol=2e-4, atol=2e-4)
    assert_close(fused.dgamma, ref.dgamma, rtol=2e-4, atol=2e-4)
    assert_close(fused.running_var, ref.running_var, rtol=1e-5)
    assert_close(fused.forward(x), ref.forward(x), rtol=2e-5, atol=2e-5)


class _Kernel:
    """A stand-in CUDA kernel: ``kernel[blocks, threads](*args)`` raises ``error``, if any."""

    def __init__(self, name, error=None):
        self.__name__, self.error, self.launches = name, error, 0

    def __getitem__(self, launch):
        def run(*args):
            self.launches += 1
            if self.error is not None:
                raise self.error
        return run


@pytest.mark.parametrize("error", [
    "TypingError('cannot type this kernel')",
    # what numba-cuda raised with NumPy 2.5 before accel restored np.row_stack: not a NumbaError
    "AttributeError(\"module 'numpy' has no attribute 'row_stack'\")",
    "RuntimeError('NVVM_ERROR_COMPILATION')",
])
def test_cuda_first_launch_failure_falls_back_to_the_reference(monkeypatch, caplog, error):
    """Any exception on a CUDA kernel's first compile/launch costs speed, not the run: logged
    once with the reason, reported by cuda_failures(), and the reference does the work."""
    from numba.core.errors import TypingError  # noqa: F401  (named in the parametrization)

    monkeypatch.setattr(dispatch, "_cuda_error", None)
    monkeypatch.setattr(dispatch, "_cuda_failed", {})
    monkeypatch.setattr(dispatch, "_cuda_launched", set())
    rng = np.random.default_rng(0)
    p = rng.standard_normal((6, 5))
    g = rng.standard_normal((6, 5))
    expected, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 1, False, 0.0, 1.0, 0)
    functional.adam(expected, g, m.copy(), v.copy(), functional.clip_array(p), *scalars)
    broken = _Kernel("adam", eval(error))
    assert not dispatch.launch_cuda(broken, (1, 32), p, g)
    assert "adam failed on its first launch" in caplog.text
    assert dispatch.cuda_failures() == {"adam": f"{type(broken.error).__name__}: "
                                                f"{broken.error}"}
    assert not dispatch.launch_cuda(broken, (1, 32), p, g) and broken.launches == 1
    # the optimizer path: a kernel that fails to build leaves the reference to do the step
    monkeypatch.setattr(dispatch, "_target", lambda a: "cuda")
    monkeypatch.setattr(dispatch, "kernels", lambda kind, target: type(
        "M", (), {"KERNELS": {"adam": broken}, "launch": staticmethod(
            lambda name, p, *a: (1, 32))}))
    dispatch.optimizer_step(functional.adam, p, g, (m, v), scalars)
    assert dispatch.last_path("adam") == "reference"
    np.testing.assert_array_equal(p, expected)


def test_cuda_errors_after_a_good_first_launch_propagate(monkeypatch):
    monkeypatch.setattr(dispatch, "_cuda_failed", {})
    monkeypatch.setattr(dispatch, "_cuda_launched", set())
    kernel = _Kernel("sgd")
    p = np.zeros(3)
    assert dispatch.launch_cuda(kernel, (1, 32), p) and kernel.launches == 1
    kernel.error = RuntimeError("an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        dispatch.launch_cuda(kernel, (1, 32), p)
    assert dispatch.cuda_failures() == {}


# -- layers: bias + activation, its backward, softmax + cross-entropy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,n,d", on_targets(
    cpu=[(0, 3), (1, 1), (2, 3), (37, 70), (300, 5)],
    cuda=[(0, 3), (1, 1), (3, 2), (13, 19)]), indirect=["target"])  # D = 19: 3 column tiles
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_layer_kernels_match_reference(act, n, d, dtype, target):
    code = functional.ACTIVATION_CODES[act]
    rng = np.random.default_rng(n * 100 + d)
    y = (rng.standard_normal((n, d)) * 4).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    dout = rng.standard_normal((n, d)).astype(dtype)
    y_ref = y.copy()
    target(functional.bias_activation, y, b, scalars=(code,))
    functional.bias_activation(y_ref, b, code)
    tol = tolerance(target, dtype)
    assert_close(y, y_ref, **tol)
    db, db_ref = np.full(d, np.nan, dtype), np.full(d, np.nan, dtype)
    dy = target(functional.activation_backward_bias, dout, y, db, scalars=(code,))
    dy_ref = functional.activation_backward_bias(dout, y, db_ref, code)
    assert dy.dtype == dtype and db.dtype == dtype
    assert_close(dy, dy_ref, **tol)
    assert_close(db, db_ref, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * max(1, n))


def test_relu_kernels_keep_nan_and_the_subgradient_at_zero():
    y = np.array([[np.nan, 0.0, -1.0, 2.0]])
    b = np.zeros(4)
    dispatch.bias_activation(y, b, functional.RELU)
    assert np.isnan(y[0, 0]) and list(y[0, 1:]) == [0.0, 0.0, 2.0]
    db = np.empty(4)
    dy = dispatch.activation_backward_bias(np.ones((1, 4)), np.array([[0.0, 0.0, 1.0, 3.0]]),
                                           db, functional.RELU)
    assert list(dy[0]) == [0.0, 0.0, 1.0, 1.0] and list(db) == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,n,c", on_targets(
    cpu=[(1, 1), (1, 10), (3, 2), (129, 10)],
    cuda=[(1, 1), (3, 2), (19, 37)]), indirect=["target"])
def test_softmax_cross_entropy_kernel_matches_reference(n, c, dtype, target):
    rng = np.random.default_rng(n + c)
    x = (rng.standard_normal((n, c)) * 5).astype(dtype)
    x[0, 0] = 800  # exp would overflow without the row max subtracted
    t = rng.integers(0, c, n)
    losses, dx = target(functional.softmax_cross_entropy, x, t)
    ref_losses, ref_dx = functional.softmax_cross_entropy(x, t)
    assert losses.dtype == dtype and dx.dtype == dtype
    assert np.isfinite(losses).all()
    assert_close(losses, ref_losses, **tolerance(target, dtype))
    assert_close(dx, ref_dx, **tolerance(target, dtype))
    # the same labels as one-hot rows take the reference, with the same numbers
    onehot = np.eye(c, dtype=dtype)[t]
    oh_losses, oh_dx = dispatch.softmax_cross_entropy(x, onehot)
    assert dispatch.last_path("softmax_cross_entropy") == "reference"
    assert_close(oh_losses, ref_losses, **TOL[dtype])
    assert_close(oh_dx, ref_dx, **TOL[dtype])


def test_fused_network_step_matches_the_reference_path():
    """A whole forward/backward with every layer kernel against the xp reference path."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 20))
    t = rng.integers(0, 5, 64)
    for activation in ("relu", "sigmoid", "tanh"):
        net = MultiLayerNet(20, [16, 12], 5, activation=activation, weight_decay=0.01,
                            dtype=np.float64, seed=2)
        dispatch.reset_calls()
        loss, grads = net.loss_and_grads(x, t)
        kernels_used = {k for k, path in dispatch.calls() if path == "cpu"}
        assert kernels_used == {"bias_activation", "activation_backward_bias",
                                "softmax_cross_entropy", "scaled_add"}, dispatch.calls()
        g = grads.flat.copy()
        with dispatch.use("reference"):
            loss_r, grads_r = net.loss_and_grads(x, t)
        assert abs(float(loss) - float(loss_r)) < 1e-13
        assert_close(g, grads_r.flat, rtol=1e-12, atol=1e-15)


def test_outputs_are_new_arrays_unless_the_site_reuses_them():
    """One-off calls and a standalone layer return new arrays (what a caller holds is never
    written over); a network's layers refill buffers of their own, one set per layer: two
    BatchNorm layers of one width never share mean/invstd."""
    rng = np.random.default_rng(9)
    x, gamma, beta, rm, rv, dy = _bn_inputs(rng, 64, 16, np.float32)
    first = dispatch.batchnorm_forward_eval(x, gamma, beta, rm, rv, 1e-5)
    kept = first.copy()
    second = dispatch.batchnorm_forward_eval(x * 2, gamma, beta, rm, rv, 1e-5)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    bn = layers.BatchNorm(gamma, beta)
    a = bn.forward(x, train=True)
    b = bn.forward(x * 2, train=True)
    assert not np.shares_memory(a, b) and not np.shares_memory(bn.mean, a)

    net = MultiLayerNet(16, [8, 8], 4, batchnorm=True, seed=0)
    x, t = net.prepare(rng.standard_normal((32, 16)).astype(np.float32),
                       rng.integers(0, 4, 32))
    net.loss_and_grads(x, t)
    bn1, bn2 = net.batchnorm_layers()
    held = [bn1.mean, bn1.invstd, bn2.mean, bn2.invstd]
    assert not any(np.shares_memory(u, v) for i, u in enumerate(held) for v in held[i + 1:])
    net.loss_and_grads(x[::-1].copy(), t[::-1].copy())
    assert bn1.mean is held[0] and bn2.invstd is held[3]  # refilled, not allocated


# -- the non-finite guard: the fused op against its reference


def _guard_case(rng, dtype, sizes, n_buffers, poison):
    """Arguments of functional.nonfinite_guard: gradient blocks of ``sizes``, running
    statistics in blocks of 3, NaN/Inf planted where ``poison`` says."""
    g = rng.standard_normal(sum(sizes)).astype(dtype)
    g_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    buffers = rng.standard_normal(3 * n_buffers).astype(dtype)
    saved = rng.standard_normal(buffers.size).astype(dtype)
    b_starts = np.arange(0, buffers.size + 1, 3, dtype=np.int64)
    loss = np.asarray(rng.random(), dtype=dtype)
    for where, at, value in poison:
        target = {"g": g, "buffers": buffers}.get(where)
        if where == "loss":
            loss = np.asarray(value, dtype=dtype)
        else:
            target[at] = value
    record = np.zeros(4 + len(sizes) + n_buffers + 3, np.int64)
    return [loss, g, g_starts, buffers, b_starts, saved, record]


GUARD_CASES = {
    "finite": [],
    "nan in the second block": [("g", 7, np.nan)],
    "inf in two blocks": [("g", 0, np.inf), ("g", 12, -np.inf)],
    "loss": [("loss", None, np.nan)],
    "statistics": [("buffers", 4, np.inf)],
    "everything": [("loss", None, np.inf), ("g", 3, np.nan), ("buffers", 0, np.nan)],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target,case", on_targets(
    cpu=[(case,) for case in GUARD_CASES],
    # a simulated launch of the guard takes ~0.15 s: the case that sets every flag, and two
    # gradient blocks flagged
    cuda=[("everything",), ("inf in two blocks",)]), indirect=["target"])
def test_guard_kernel_matches_reference_over_steps(case, dtype, target):
    """Several steps in a row (the record carries over): sticky and not, the list of
    skipped iterations filling up past its room; the last block decides (several blocks)."""
    for sticky in (True, False):
        rng = np.random.default_rng(3)
        fused = _guard_case(rng, dtype, (5, 9, 1, 4), 2, GUARD_CASES[case])
        ref = [a.copy() for a in fused]
        for it in range(1, 7):
            bad = it == 2  # the poison at step 2 only: with sticky, steps 3..6 skip too
            clean = _guard_case(np.random.default_rng(it), dtype, (5, 9, 1, 4), 2, [])
            step = _guard_case(np.random.default_rng(it), dtype, (5, 9, 1, 4), 2,
                               GUARD_CASES[case] if bad else [])
            for args in (fused, ref):  # new loss, gradient and statistics; record kept
                args[0] = step[0]
                args[1][...] = step[1]
                args[3][...] = step[3] if bad else clean[3]
            target(F.nonfinite_guard, *fused, scalars=(it, sticky))
            F.nonfinite_guard(*ref, it, sticky)
            for got, want, name in zip(fused[3:], ref[3:], ("buffers", "b_starts", "saved",
                                                             "record")):
                np.testing.assert_array_equal(got, want, err_msg=f"{name} at step {it}")
        record = fused[6]
        if case == "finite":
            assert not record.any()
        else:
            assert record[R.FIRST] == 2 and record[R.SKIPPED] == (5 if sticky else 1)
            listed = record[R.FLAGS + 4 + 2:]  # room for 3: the rest counted, not listed
            assert list(listed) == ([2, 3, 4] if sticky else [2, 0, 0])
            assert record[R.SKIP] == sticky  # the last step: skipped only when sticky


def test_guard_names_what_is_not_finite():
    rng = np.random.default_rng(0)
    args = _guard_case(rng, np.float32, (5, 9, 1, 4), 2, GUARD_CASES["everything"])
    dispatch.call(F.nonfinite_guard, *args, scalars=(7, True))
    record = args[6]
    assert record[R.SKIP] == 1 and record[R.FIRST] == 7
    assert record[R.WHAT] == R.LOSS | R.GRADIENT | R.STATISTICS
    assert list(record[R.FLAGS:R.FLAGS + 6]) == [1, 0, 0, 0, 1, 0]  # g block 0, buffers 0
    # a sum that overflows though every value is finite: skipped, nothing named
    g = np.full(4, 3e38, np.float32)
    args = _guard_case(rng, np.float32, (4,), 0, [])
    args[1] = g
    dispatch.call(F.nonfinite_guard, *args, scalars=(1, True))
    assert args[6][R.SKIP] == 0  # summed in float64: 1.2e39 is finite there


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaled_add_matches_reference_bit_for_bit(dtype, target):
    """g ← g + λ·W (a network's L2 gradient): on the CPU the same float ops as the reference,
    in order (a GPU compile may contract them into one fused multiply-add)."""
    rng = np.random.default_rng(5)
    for size in (0, 1, target.small(1001, 37)):
        g, w = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
        ref = g.copy()
        target(F.scaled_add, g, w, scalars=(1e-3,))
        F.scaled_add(ref, w, 1e-3)
        exact = dict(rtol=0, atol=0)
        assert_close(g, ref, **(CUDA_TOL[dtype] if target.name == "cuda" else exact))
