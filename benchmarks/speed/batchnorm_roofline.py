"""Batch norm's training forward + backward on the CPU: the fused kernels against the xp
reference, the roofline, the two-pass floor and torch.

For (N, D) float32 inputs from 128x128 to 1024x4096 (NumPy), in the order of llm.c's dev/cuda
files:

1. reference: ``accel.functional.batchnorm_forward_train`` then ``batchnorm_backward``;
2. kernel: the same through ``accel.dispatch``'s sites that refill their outputs, as a
   network's BatchNorm layer calls them;
3. validate: out, the running statistics, dx, dgamma and dbeta of both agree to float32
   rounding;
4. time (medians): the reference, the kernels, a roofline kernel moving the compulsory bytes
   (read x, write out; read x, dy, write dx: 20 bytes an element) with trivial math, the
   two-pass floor (the bytes the fused kernels move: x, and x and dy, read once more for the
   column sums), both serial or parallel as the kernels, and torch's ``native_batch_norm``
   and its backward in a process of its own.

Writes batchnorm_roofline.json. ``bn_case`` and ``roofline_kernels`` serve bn_rounds.py and
gpu_check.py too.

    python benchmarks/speed/batchnorm_roofline.py [--quick] [--out DIR]
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse
import types

import numpy as np
import timing

SHAPES = [(128, 128), (256, 512), (1024, 1024), (1024, 4096)]
MOMENTUM, EPS = 0.9, 1e-5
BYTES = 20  # per element: read x, write out; read x, dy, write dx (float32)


def repeats(size, quick):
    return 3 if quick else 7 if size >= 10**6 else 21


def roofline_kernels(size):
    """Kernels that move batch norm's bytes with trivial math: ``.bn`` (the compulsory bytes
    of forward + backward) and ``.bn_two_pass`` (the fused kernels' bytes: a pass for the
    column sums before each output pass). For inputs of ``size`` elements: serial below
    ``dispatch.PARALLEL_MIN``, parallel from there, as the fused kernels."""
    from numba import njit, prange

    from accel import dispatch

    parallel = size >= dispatch.PARALLEL_MIN
    # one cache entry per name: the parallel compile's
    jit = njit(parallel=parallel, cache=parallel, error_model="numpy")

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

    return types.SimpleNamespace(bn=bn_bytes, bn_two_pass=bn_two_pass_bytes)


def bn_case(xp, n, d, rng):
    """A batch-norm training step at (n, d) float32 on ``xp`` arrays: ``case.fwd_bwd(mod)``
    runs the forward and the backward through ``mod``: accel.dispatch (the fused kernels,
    through sites that refill their outputs, as a network's BatchNorm layer does) or
    accel.functional (the reference), and returns ((out, mean, invstd), dx); the arrays are
    its attributes (x, dy, gamma, beta, rm, rv, dgamma, dbeta)."""
    from accel import dispatch, functional

    train = dispatch.Site(functional.batchnorm_forward_train)
    back = dispatch.Site(functional.batchnorm_backward)
    train.reuse = back.reuse = True
    c = types.SimpleNamespace(
        x=xp.asarray(rng.standard_normal((n, d), dtype=np.float32)),
        dy=xp.asarray(rng.standard_normal((n, d), dtype=np.float32)),
        gamma=xp.ones(d, np.float32), beta=xp.zeros(d, np.float32),
        rm=xp.zeros(d, np.float32), rv=xp.ones(d, np.float32),
        dgamma=xp.empty(d, np.float32), dbeta=xp.empty(d, np.float32))

    def fwd_bwd(mod):
        if mod is dispatch:
            fwd = train(c.x, c.gamma, c.beta, c.rm, c.rv, scalars=(MOMENTUM, EPS))
            return fwd, back(c.dy, c.x, c.gamma, *fwd[1:], c.dgamma, c.dbeta)
        fwd = mod.batchnorm_forward_train(c.x, c.gamma, c.beta, c.rm, c.rv, MOMENTUM, EPS)
        return fwd, mod.batchnorm_backward(c.dy, c.x, c.gamma, *fwd[1:], c.dgamma, c.dbeta)

    c.fwd_bwd = fwd_bwd
    return c


def validate(n, d):
    """Largest |kernel − reference| over out, running stats, dx, dgamma, dbeta (each relative
    to its largest |value|) from the same inputs; raises when above float32 rounding."""
    from accel import dispatch, functional

    cases = [bn_case(np, n, d, np.random.default_rng(7)) for _ in range(2)]
    results = []
    for case, mod in zip(cases, (dispatch, functional)):
        (out, _, _), dx = case.fwd_bwd(mod)
        results.append([out, case.rm, case.rv, dx, case.dgamma, case.dbeta])
    err = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
              for a, b in zip(*results))
    if err > 1e-4:
        raise SystemExit(f"the batch-norm kernels do not match the reference at {n}x{d}: "
                         f"relative error {err:.2e}")
    return err


def torch_worker(shapes, quick):
    """Seconds of torch's native_batch_norm forward + backward per shape."""
    import torch

    torch.manual_seed(0)
    res = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    for n, d in shapes:
        x, dy = torch.randn(n, d), torch.randn(n, d)
        g, b = torch.ones(d), torch.zeros(d)
        rm, rv = torch.zeros(d), torch.ones(d)

        def fwd_bwd():
            out, mean, invstd = torch.native_batch_norm(x, g, b, rm, rv, True, 1 - MOMENTUM,
                                                        EPS)
            return torch.ops.aten.native_batch_norm_backward(
                dy, x, g, rm, rv, mean, invstd, True, EPS, [True, True, True])

        with torch.no_grad():
            res[f"{n}x{d}"] = timing.median(fwd_bwd, repeats(n * d, quick), min_time=0.2)
    return res


def measure(shapes, quick, torch_rows):
    from accel import dispatch, functional

    rng = np.random.default_rng(1)
    rows = []
    for n, d in shapes:
        err = validate(n, d)
        case = bn_case(np, n, d, rng)
        x, dy, fwd_bwd = case.x, case.dy, case.fwd_bwd
        roofline = roofline_kernels(n * d)
        reps = repeats(n * d, quick)
        ref = timing.median(lambda: fwd_bwd(functional), max(3, reps // 3))
        fused = timing.median(lambda: fwd_bwd(dispatch), reps, min_time=0.2)
        path = dispatch.last_path("batchnorm_backward")
        out, dx = np.empty_like(x), np.empty_like(x)
        roof = timing.median(lambda: roofline.bn(x, dy, out, dx), reps, min_time=0.2)
        two_pass = timing.median(lambda: roofline.bn_two_pass(x, dy, out, dx), reps,
                                 min_time=0.2)
        row = dict(op="batchnorm_fwd_bwd", n=n * d, shape=[n, d], dtype="float32", path=path,
                   max_rel_error=err, reference_s=ref, fused_s=fused, roofline_s=roof,
                   fraction_of_roofline=roof / fused, fused_GBps=BYTES * n * d / fused / 1e9,
                   two_pass_floor_s=two_pass, fused_over_two_pass_floor=fused / two_pass,
                   speedup_vs_reference=ref / fused)
        torch_s = torch_rows.get(f"{n}x{d}")
        if torch_s is not None:
            row.update(torch_s=torch_s, fused_over_torch=fused / torch_s)
        rows.append(row)
    return rows


def print_table(rows):
    nan = float("nan")
    print(f"{'shape':>10}{'path':>6}{'ref ms':>10}{'fused ms':>10}{'roof ms':>10}{'floor ms':>10}"
          f"{'%roof':>7}{'/floor':>7}{'GB/s':>7}{'x ref':>7}{'torch ms':>10}{'/torch':>7}")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):>10}{r['path']:>6}"
              f"{r['reference_s'] * 1e3:10.3f}{r['fused_s'] * 1e3:10.3f}"
              f"{r['roofline_s'] * 1e3:10.3f}{r['two_pass_floor_s'] * 1e3:10.3f}"
              f"{100 * r['fraction_of_roofline']:6.0f}%{r['fused_over_two_pass_floor']:7.2f}"
              f"{r['fused_GBps']:7.1f}{r['speedup_vs_reference']:7.1f}"
              f"{r.get('torch_s', nan) * 1e3:10.3f}{r.get('fused_over_torch', nan):7.2f}")


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="the two smaller shapes, 3 repeats")
    ap.add_argument("--no-torch", action="store_true", help="accel's rows only")
    timing.add_out(ap, "batchnorm_roofline.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shapes = SHAPES[:2] if args.quick else SHAPES
    if args.worker:
        timing.reply(torch_worker(shapes, args.quick))
        return 0
    load = timing.check_load()
    torch_rows, why = timing.torch_rows(__file__, args)
    rows = measure(shapes, args.quick, torch_rows)
    print_table(rows)
    meta = timing.machine(load, quick=args.quick, torch=torch_rows.get("torch"),
                          torch_threads=torch_rows.get("torch_threads"), torch_skipped=why)
    timing.write_json(args.out, "batchnorm_roofline", dict(meta=meta, rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
