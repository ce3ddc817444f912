"""Fused kernels vs the xp reference, a roofline kernel and PyTorch.

Rows (numpy backend, float32 unless said):
- Adam update over 1e4..1e7 parameters: the reference (accel.functional.adam), the fused kernel
  (through accel.dispatch), a "roofline" kernel that moves the same bytes (read p, g, m, v;
  write p, m, v) with trivial math, the fraction of the roofline reached, achieved GB/s, and
  torch.optim.Adam(fused=True);
- gradient-norm clipping's factor over the same sizes (``clip_norm``: one reduction over g,
  4 bytes an element): reference, fused, torch.nn.utils.clip_grad_norm_ (which also scales g);
- BatchNorm training forward + backward over (N, D): reference, fused, a roofline kernel moving
  the compulsory bytes (read x, write out; read x, dy, write dx), the two-pass floor (the bytes
  the fused kernels move: x, and x and dy, read once more for the column sums), torch's CPU
  batch_norm;
- the whole training step of the 784-100x4-10 MLP (batch 128, Adam, float32): accel fused,
  accel reference, the same model in torch;
- array operations per training step of that MLP, with and without BatchNorm, per layer type,
  fused and reference (``accel.opcount``: on a GPU each is a kernel launch);
- first-call compile time of the kernels, with a cold and a warm on-disk cache (fresh
  processes);
- GPU rows when CuPy sees a GPU (skipped with the reason otherwise).

PyTorch runs in a separate process (two thread pools in one process slow each other down).
Times are medians of repeated runs; every ratio comes from this one run.

    python benchmarks/bench_kernels.py [--quick] [--out DIR] [--name NAME]
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ADAM_SIZES = [10**4, 10**5, 10**6, 10**7]
BN_SHAPES = [(128, 128), (256, 512), (1024, 1024), (1024, 4096)]
MLP = dict(input_size=784, hidden=[100] * 4, output_size=10, batch=128)
# beta1, beta2, eps, lr, t, folded, wd, shrink, decayed
ADAM_SCALARS = (0.9, 0.999, 1e-8, 1e-3, 1000, False, 0.0, 1.0, 0)
CLIP_SCALARS = (1.0, 1e-6, True)  # max_norm, eps, last


def median_time(fn, repeat, warmup=2, min_time=0.0):
    """Median seconds of ``fn()`` over ``repeat`` runs (more if they are shorter than
    min_time in total)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * repeat:
            break
    return float(np.median(times))


def _reps(n, quick):
    if quick:
        return 3
    return 7 if n >= 10**6 else 21


# -- roofline kernels: the same bytes as the fused kernels, trivial math


def roofline_kernels():
    """Kernels that move a fused kernel's bytes with trivial math: ``.adam``, ``.bn`` (the
    compulsory bytes of batch norm fwd + bwd) and ``.bn_two_pass`` (the bytes the batch-norm
    kernels move: a pass for the column sums before each output pass)."""
    import types

    from numba import njit, prange

    jit = njit(parallel=True, cache=True, error_model="numpy")

    @jit
    def adam_bytes(p, g, m, v):  # read p, g, m, v; write p, m, v
        for i in prange(p.size):
            gi = g[i]
            m[i] = m[i] + gi
            v[i] = v[i] - gi
            p[i] = p[i] + gi

    @jit
    def bn_bytes(x, dy, out, dx):  # forward: read x, write out; backward: read x, dy, write dx
        n, d = x.shape
        for i in prange(n):
            for j in range(d):
                out[i, j] = x[i, j]
        for i in prange(n):
            for j in range(d):
                dx[i, j] = x[i, j] + dy[i, j]

    @jit
    def bn_two_pass_bytes(x, dy, out, dx):  # read x; read x, write out; read x, dy; read
        n, d = x.shape                       # x, dy, write dx
        nc = max(1, min(n // 64, 64))
        s = np.zeros((nc, d), x.dtype)
        for c in prange(nc):
            for i in range(c * n // nc, (c + 1) * n // nc):
                for j in range(d):
                    s[c, j] += x[i, j]
        for i in prange(n):
            for j in range(d):
                out[i, j] = x[i, j] + s[0, j]
        for c in prange(nc):
            for i in range(c * n // nc, (c + 1) * n // nc):
                for j in range(d):
                    s[c, j] += x[i, j] * dy[i, j]
        for i in prange(n):
            for j in range(d):
                dx[i, j] = x[i, j] + dy[i, j] + s[0, j]

    return types.SimpleNamespace(adam=adam_bytes, bn=bn_bytes, bn_two_pass=bn_two_pass_bytes)


# -- the accel side


def bench_adam(sizes, quick, torch_rows):
    from accel import dispatch, functional

    adam_bytes = roofline_kernels().adam
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        p = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32) * 1e-3
        m, v = np.zeros_like(p), np.zeros_like(p)
        clip = functional.clip_array(p)
        reps = _reps(n, quick)
        ref = median_time(lambda: functional.adam(p, g, m, v, clip, *ADAM_SCALARS),
                          max(3, reps // 3))
        fused = median_time(lambda: dispatch.optimizer_step(functional.adam, p, g, (m, v),
                                                             ADAM_SCALARS), reps, min_time=0.2)
        path = dispatch.last_path("adam")
        roof = median_time(lambda: adam_bytes(p, g, m, v), reps, min_time=0.2)
        nbytes = 28 * n
        row = dict(op="adam", n=n, dtype="float32", path=path, reference_s=ref, fused_s=fused,
                   roofline_s=roof, fraction_of_roofline=roof / fused,
                   fused_GBps=nbytes / fused / 1e9, roofline_GBps=nbytes / roof / 1e9,
                   speedup_vs_reference=ref / fused)
        rows.append(_with_torch(row, torch_rows.get(f"adam/{n}"), "torch_fused_s"))
        site = dispatch.Site(functional.clip_factor)  # as an optimizer with clip_norm calls it
        ref = median_time(lambda: functional.clip_factor(g, clip, *CLIP_SCALARS), reps)
        fused = median_time(lambda: site(g, clip, scalars=CLIP_SCALARS), reps, min_time=0.2)
        clip[...] = (1.0, 0.0)
        row = dict(op="clip_norm", n=n, dtype="float32", path=dispatch.last_path("clip_factor"),
                   reference_s=ref, fused_s=fused, fused_GBps=4 * n / fused / 1e9,
                   speedup_vs_reference=ref / fused)
        rows.append(_with_torch(row, torch_rows.get(f"clip/{n}"), "torch_s"))
    return rows


def _with_torch(row, torch_s, key):
    """``row`` with torch's time under ``key`` and the fused/torch ratio, when torch ran."""
    if torch_s is not None:
        row[key] = torch_s
        row["fused_over_torch"] = row["fused_s"] / torch_s
    return row


def bn_case(xp, n, d, rng):
    """A batch-norm training step at (n, d) float32 on ``xp`` arrays: ``case.fwd_bwd(mod)``
    runs the forward and the backward through ``mod``: accel.dispatch (the fused kernels,
    through sites that refill their outputs, as a network's BatchNorm layer does) or
    accel.functional (the reference); the arrays are its attributes (x, dy, gamma, beta, rm,
    rv, dgamma, dbeta)."""
    import types

    from accel import dispatch, functional

    train, back = dispatch.Site(functional.batchnorm_forward_train), dispatch.Site(
        functional.batchnorm_backward)
    train.reuse = back.reuse = True
    c = types.SimpleNamespace(
        x=xp.asarray(rng.standard_normal((n, d), dtype=np.float32)),
        dy=xp.asarray(rng.standard_normal((n, d), dtype=np.float32)),
        gamma=xp.ones(d, np.float32), beta=xp.zeros(d, np.float32),
        rm=xp.zeros(d, np.float32), rv=xp.ones(d, np.float32),
        dgamma=xp.empty(d, np.float32), dbeta=xp.empty(d, np.float32))

    def fwd_bwd(mod):
        if mod is dispatch:
            out, mean, invstd = train(c.x, c.gamma, c.beta, c.rm, c.rv, scalars=(0.9, 1e-5))
            return out, back(c.dy, c.x, c.gamma, mean, invstd, c.dgamma, c.dbeta)
        out, mean, invstd = mod.batchnorm_forward_train(c.x, c.gamma, c.beta, c.rm, c.rv, 0.9,
                                                        1e-5)
        return out, mod.batchnorm_backward(c.dy, c.x, c.gamma, mean, invstd, c.dgamma,
                                           c.dbeta)

    c.fwd_bwd = fwd_bwd
    return c


def bench_bn(shapes, quick, torch_rows):
    from accel import dispatch, functional

    roofline = roofline_kernels()
    rows = []
    rng = np.random.default_rng(1)
    for n, d in shapes:
        case = bn_case(np, n, d, rng)
        x, dy, fwd_bwd = case.x, case.dy, case.fwd_bwd
        reps = _reps(n * d, quick)
        ref = median_time(lambda: fwd_bwd(functional), max(3, reps // 3))
        fused = median_time(lambda: fwd_bwd(dispatch), reps, min_time=0.2)
        path = dispatch.last_path("batchnorm_backward")
        out, dx = np.empty_like(x), np.empty_like(x)
        roof = median_time(lambda: roofline.bn(x, dy, out, dx), reps, min_time=0.2)
        two_pass = median_time(lambda: roofline.bn_two_pass(x, dy, out, dx), reps,
                               min_time=0.2)
        nbytes = 5 * n * d * 4
        row = dict(op="batchnorm_fwd_bwd", n=n * d, shape=[n, d], dtype="float32", path=path,
                   reference_s=ref, fused_s=fused, roofline_s=roof,
                   fraction_of_roofline=roof / fused, fused_GBps=nbytes / fused / 1e9,
                   two_pass_floor_s=two_pass, fused_over_two_pass_floor=fused / two_pass,
                   speedup_vs_reference=ref / fused)
        rows.append(_with_torch(row, torch_rows.get(f"bn/{n}x{d}"), "torch_s"))
    return rows


def bench_mlp(quick, torch_rows, profile=False):
    from accel import MultiLayerNet, dispatch, optim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((MLP["batch"], MLP["input_size"]), dtype=np.float32)
    t = rng.integers(0, MLP["output_size"], MLP["batch"])
    out = {}
    for label in ("fused", "reference"):
        net = MultiLayerNet(MLP["input_size"], MLP["hidden"], MLP["output_size"],
                            dtype=np.float32, backend="numpy", seed=0)
        opt = optim.Adam(lr=1e-3)
        x, t = net.prepare(x, t)

        def step(net=net, opt=opt):
            opt.update(net.params, net.loss_and_grads(x, t)[1])

        with dispatch.use(label):
            out[f"{label}_s"] = median_time(step, 15 if quick else 101, warmup=5)
            out[f"{label}_path"] = dispatch.last_path("adam")
    row = dict(op="mlp_step", n=int(net.params.flat.size), shape=[MLP["input_size"],
               *MLP["hidden"], MLP["output_size"]], batch=MLP["batch"], dtype="float32",
               path=out["fused_path"], fused_s=out["fused_s"], reference_s=out["reference_s"],
               speedup_vs_reference=out["reference_s"] / out["fused_s"])
    paired = mlp_rounds(quick, 3 if quick else 7)
    if paired is not None:  # the ratio from interleaved processes, not from two moments
        row.update(torch_s=paired["torch"], fused_process_s=paired["accel"],
                   fused_over_torch=paired["accel"] / paired["torch"],
                   rounds_s=paired["rounds"])
    if profile:
        row["profile"] = profile_mlp(net, opt, x, t)
    return [row]


def count_ops():
    """Array operations (GPU kernel launches) per training step of the MLP row, with and
    without BatchNorm, on each path: {"total", "by_scope", "ops"} per configuration."""
    from accel import MultiLayerNet, dispatch, opcount, optim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((MLP["batch"], MLP["input_size"]), dtype=np.float32)
    t = rng.integers(0, MLP["output_size"], MLP["batch"])
    out = {}
    for batchnorm in (False, True):
        for path in ("fused", "reference"):
            net = MultiLayerNet(MLP["input_size"], MLP["hidden"], MLP["output_size"],
                                batchnorm=batchnorm, backend=opcount.backend(), seed=0)
            opt = optim.Adam(lr=1e-3)
            with dispatch.use(path):  # the second step: the first also allocates Adam's m, v
                count = [opcount.training_step(net, opt, x, t) for _ in range(2)][-1]
            out[f"{'bn' if batchnorm else 'plain'}_{path}"] = dict(
                total=count.total, by_scope=dict(count.by_scope), ops=dict(count.ops))
    return out


def print_ops(ops):
    print("array operations per training step (784-100x4-10, Adam, batch 128; "
          "each a kernel launch on a GPU):")
    for key, c in ops.items():
        parts = ", ".join(f"{k} {v}" for k, v in c["by_scope"].items())
        print(f"  {key:<16}{c['total']:4d}   ({parts})")


def profile_mlp(net, opt, x, t, reps=200):
    """Time per part of one training step (each part timed alone, medians)."""
    from accel import dispatch

    parts = {}
    grads = net.loss_and_grads(x, t)[1]
    parts["forward+loss (input checked)"] = median_time(lambda: net.loss(x, t, train=True),
                                                        reps)
    parts["backward(all layers)"] = median_time(lambda: _backward(net), reps)
    parts["adam update (1 fused call)"] = median_time(lambda: opt.update(net.params, grads),
                                                      reps)
    for i, layer in enumerate(net.passes):  # as the network runs them (Affine+ReLU fused)
        name = f"{i}:{type(layer).__name__}"
        xin = _layer_input(net, i, x)
        parts[f"fwd {name}"] = median_time(lambda layer=layer, xin=xin: layer.forward(xin, True),
                                           reps)
    parts["dispatch path"] = dispatch.last_path("adam")
    return parts


def _backward(net):
    dout = net.last_layer.backward(1.0)
    for layer in reversed(net.passes):
        dout = layer.backward(dout)


def _layer_input(net, i, x):
    for layer in net.passes[:i]:
        x = layer.forward(x, True)
    return x


# -- compile time, in fresh processes


COMPILE_SNIPPET = r"""
import time, numpy as np
t0 = time.perf_counter()
import accel
from accel import dispatch, functional
t_import = time.perf_counter() - t0
p = np.ones(1000, np.float32); g = p.copy(); m = np.zeros_like(p); v = np.zeros_like(p)
t0 = time.perf_counter()
dispatch.optimizer_step(functional.adam, p, g, (m, v), (0.9, 0.999, 1e-8, 1e-3, 1, 0, 0.0, 1.0, 0))
t_adam = time.perf_counter() - t0
x = np.ones((8, 4), np.float32); ga = np.ones(4, np.float32); be = np.zeros(4, np.float32)
t0 = time.perf_counter()
out, mean, invstd = dispatch.batchnorm_forward_train(x, ga, be, be.copy(), ga.copy(), 0.9, 1e-5)
dispatch.batchnorm_backward(x, x, ga, mean, invstd, be.copy(), be.copy())
t_bn = time.perf_counter() - t0
print(t_import, t_adam, t_bn)
"""


def bench_compile():
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("ACCEL_KERNELS", None)
        for label in ("cold cache", "warm cache"):
            res = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env,
                                 capture_output=True, text=True, check=True)
            t_import, t_adam, t_bn = map(float, res.stdout.split()[-3:])
            rows.append(dict(op="compile", cache=label, import_accel_s=t_import,
                             first_adam_call_s=t_adam, first_bn_fwd_bwd_call_s=t_bn))
    return rows


# -- torch, in its own process


def torch_worker(spec):
    import torch

    torch.manual_seed(0)
    res = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    for n in spec["adam_sizes"]:
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n) * 1e-3
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
        res[f"adam/{n}"] = median_time(opt.step, _reps(n, spec["quick"]), min_time=0.2)
        res[f"clip/{n}"] = median_time(lambda: torch.nn.utils.clip_grad_norm_([p], 1e9),
                                       _reps(n, spec["quick"]), min_time=0.2)
    for n, d in spec["bn_shapes"]:
        x, dy = torch.randn(n, d), torch.randn(n, d)
        g, b = torch.ones(d), torch.zeros(d)
        rm, rv = torch.zeros(d), torch.ones(d)

        def fwd_bwd(x=x, dy=dy, g=g, b=b, rm=rm, rv=rv):
            out, mean, invstd = torch.native_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
            return torch.ops.aten.native_batch_norm_backward(
                dy, x, g, rm, rv, mean, invstd, True, 1e-5, [True, True, True])

        with torch.no_grad():
            res[f"bn/{n}x{d}"] = median_time(fwd_bwd, _reps(n * d, spec["quick"]),
                                             min_time=0.2)
    if not spec.get("mlp", True):
        print(json.dumps(res))
        return
    sizes = [MLP["input_size"], *MLP["hidden"], MLP["output_size"]]
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(MLP["batch"], MLP["input_size"])
    t = torch.randint(0, MLP["output_size"], (MLP["batch"],))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), t).backward()
        opt.step()

    res["mlp"] = median_time(step, 15 if spec["quick"] else 101, warmup=5)
    print(json.dumps(res))


def mlp_worker(spec):
    """One MLP-step timing in a fresh process: accel fused or torch (for interleaved rounds)."""
    if spec["kind"] == "torch":
        torch_worker(dict(spec, adam_sizes=[], bn_shapes=[]))
        return
    from accel import MultiLayerNet, optim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((MLP["batch"], MLP["input_size"]), dtype=np.float32)
    t = rng.integers(0, MLP["output_size"], MLP["batch"])
    net = MultiLayerNet(MLP["input_size"], MLP["hidden"], MLP["output_size"],
                        dtype=np.float32, backend="numpy", seed=0)
    opt = optim.Adam(lr=1e-3)
    x, t = net.prepare(x, t)

    def step():
        opt.update(net.params, net.loss_and_grads(x, t)[1])

    print(json.dumps({"mlp": median_time(step, 15 if spec["quick"] else 101, warmup=5)}))


def mlp_rounds(quick, rounds):
    """accel vs torch MLP step, each in its own process, alternating ``rounds`` times so both
    see the same share of a noisy machine; returns medians over rounds (None without torch)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    times = {"accel": [], "torch": []}
    for _ in range(rounds):
        for kind in ("accel", "torch"):
            spec = json.dumps(dict(kind=kind, quick=quick))
            res = subprocess.run([sys.executable, __file__, "--mlp-worker", spec],
                                 capture_output=True, text=True, check=True)
            times[kind].append(json.loads(res.stdout.strip().splitlines()[-1])["mlp"])
    return {k: float(np.median(v)) for k, v in times.items()} | {"rounds": times}


def run_torch(adam_sizes, bn_shapes, quick):
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return {}, "torch is not installed"
    except Exception as exc:  # noqa: BLE001
        return {}, f"torch not importable: {exc}"
    spec = json.dumps(dict(adam_sizes=adam_sizes, bn_shapes=bn_shapes, quick=quick,
                           mlp=False))
    res = subprocess.run([sys.executable, __file__, "--torch-worker", spec],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {}, f"torch worker failed: {res.stderr.strip().splitlines()[-1:]}"
    return json.loads(res.stdout.strip().splitlines()[-1]), None


# -- GPU


def bench_gpu(quick):
    from accel import backend

    if not backend.cupy_available():
        return [], f"no GPU rows: CuPy backend unavailable ({backend.cupy_unavailable_reason()})"
    import cupy
    from cupyx.profiler import benchmark

    from accel import dispatch, functional

    rows = []
    for n in ([10**6] if quick else [10**6, 10**7, 10**8]):
        p = cupy.random.standard_normal(n, dtype=cupy.float32)
        g = cupy.random.standard_normal(n, dtype=cupy.float32) * 1e-3
        m, v = cupy.zeros_like(p), cupy.zeros_like(p)
        fused = benchmark(dispatch.optimizer_step, (functional.adam, p, g, (m, v), ADAM_SCALARS),
                          n_repeat=20).gpu_times.mean()
        ref = benchmark(functional.adam, (p, g, m, v, functional.clip_array(p), *ADAM_SCALARS),
                        n_repeat=10).gpu_times.mean()
        dst = cupy.empty_like(p)
        copy = benchmark(lambda: dst.__setitem__(Ellipsis, p), (), n_repeat=20).gpu_times.mean()
        rows.append(dict(op="adam_gpu", n=n, dtype="float32", path=dispatch.last_path("adam"),
                         fused_s=float(fused), reference_s=float(ref),
                         fused_GBps=28 * n / fused / 1e9, copy_GBps=8 * n / copy / 1e9,
                         fraction_of_copy_bw=(28 * n / fused) / (8 * n / copy)))
    return rows, None


# -- output


def print_table(rows):
    def fmt(v):
        if isinstance(v, float):
            return f"{v * 1e3:9.3f}" if v < 100 else f"{v:9.1f}"
        return f"{v!s:>9}"

    print(f"{'op':<18}{'size':>10}{'path':>10}{'ref ms':>10}{'fused ms':>10}{'roof ms':>10}"
          f"{'%roof':>7}{'GB/s':>7}{'x ref':>7}{'torch ms':>10}{'/torch':>7}")
    for r in rows:
        if r["op"] == "compile":
            continue
        size = "x".join(map(str, r["shape"])) if "shape" in r and r["op"] != "mlp_step" \
            else f"{r['n']:.0e}" if r["op"] != "mlp_step" else f"{r['n']}p"
        torch_s = r.get("torch_fused_s", r.get("torch_s"))
        print(f"{r['op']:<18}{size:>10}{r.get('path', ''):>10}"
              f"{fmt(r.get('reference_s', float('nan')))}{fmt(r['fused_s'])}"
              f"{fmt(r.get('roofline_s', float('nan')))}"
              f"{100 * r.get('fraction_of_roofline', float('nan')):6.0f}%"
              f"{r.get('fused_GBps', float('nan')):7.1f}"
              f"{r.get('speedup_vs_reference', float('nan')):7.1f}"
              f"{fmt(torch_s if torch_s is not None else float('nan'))}"
              f"{r.get('fused_over_torch', float('nan')):7.2f}")
    for r in rows:
        if r["op"] == "batchnorm_fwd_bwd":
            print(f"batchnorm_fwd_bwd {'x'.join(map(str, r['shape']))}: two-pass floor "
                  f"{r['two_pass_floor_s'] * 1e3:.3f} ms, fused/floor "
                  f"{r['fused_over_two_pass_floor']:.2f}, floor/roofline "
                  f"{r['two_pass_floor_s'] / r['roofline_s']:.2f}")
    for r in rows:
        if r["op"] == "mlp_step" and "rounds_s" in r:
            print(f"mlp_step in alternating processes ({len(r['rounds_s']['accel'])} rounds, "
                  f"medians): accel {r['fused_process_s'] * 1e3:.3f} ms, torch "
                  f"{r['torch_s'] * 1e3:.3f} ms, ratio {r['fused_over_torch']:.2f}")
    for r in rows:
        if r["op"] == "compile":
            print(f"compile ({r['cache']}): import accel {r['import_accel_s'] * 1e3:.0f} ms, "
                  f"first Adam call {r['first_adam_call_s']:.2f} s, first BN fwd+bwd "
                  f"{r['first_bn_fwd_bwd_call_s']:.2f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
    ap.add_argument("--out", default="benchmarks/out/", metavar="DIR",
                    help="folder for the JSON (default: benchmarks/out/)")
    ap.add_argument("--name", default=f"cpu-{os.cpu_count()}core",
                    help="machine name used in the JSON file name (default: cpu-<cores>core, "
                         f"here {f'cpu-{os.cpu_count()}core'})")
    ap.add_argument("--profile", action="store_true", help="also time the MLP step's parts")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--mlp-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_worker:
        torch_worker(json.loads(args.torch_worker))
        return
    if args.mlp_worker:
        mlp_worker(json.loads(args.mlp_worker))
        return

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: load average {load_before:.2f} before the run: other processes share "
              "the cores, and parallel timings wait for time slices")
    adam_sizes = ADAM_SIZES[:2] if args.quick else ADAM_SIZES
    bn_shapes = BN_SHAPES[:2] if args.quick else BN_SHAPES
    torch_rows, why = run_torch(adam_sizes, bn_shapes, args.quick)
    if why:
        print(f"torch rows skipped: {why}")
    compile_rows = bench_compile()
    rows = bench_adam(adam_sizes, args.quick, torch_rows)
    rows += bench_bn(bn_shapes, args.quick, torch_rows)
    rows += bench_mlp(args.quick, torch_rows, profile=args.profile)
    gpu_rows, gpu_why = bench_gpu(args.quick)
    if gpu_why:
        print(gpu_why)
    rows += gpu_rows + compile_rows
    ops = count_ops()

    from accel import dispatch

    print("kernel calls per (op, path): "
          + ", ".join(f"{op}/{path}: {k}" for (op, path), k in sorted(dispatch.calls().items())))
    print(f"CPU kernels: parallel from {dispatch.PARALLEL_MIN} elements, serial below; "
          "the roofline kernel is always parallel")
    print_table(rows)
    print_ops(ops)
    if "profile" in rows[-len(compile_rows) - len(gpu_rows) - 1]:
        print("MLP step profile (ms):")
        for k, v in rows[-len(compile_rows) - len(gpu_rows) - 1]["profile"].items():
            print(f"  {k:<32}{v * 1e3:8.3f}" if isinstance(v, float) else f"  {k:<32}{v}")

    import numba

    meta = dict(machine=args.name, cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                numba_threads=numba.get_num_threads(), quick=args.quick,
                date=time.strftime("%Y-%m-%d %H:%M:%S"), load_before=load_before,
                load_after=os.getloadavg()[0],
                torch=torch_rows.get("torch_version"), torch_threads=torch_rows.get(
                    "torch_threads"), torch_skipped=why, gpu_skipped=gpu_why)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_kernels-{args.name}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(dict(meta=meta, rows=rows, ops_per_step=ops), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
