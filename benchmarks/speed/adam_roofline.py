"""Adam's update on the CPU: the fused kernel against the xp reference, the roofline and torch.

For 1e4..1e7 float32 parameters (NumPy), in the order of llm.c's dev/cuda files:

1. reference: ``accel.functional.adam``, the rule in plain xp;
2. kernel: the same step through ``accel.dispatch`` (the fused Numba kernel: one loop,
   parallel from ``dispatch.PARALLEL_MIN`` elements);
3. validate: one step of each from the same state; p, m and v must agree to float32 rounding;
4. time (medians): the reference, the kernel, a roofline kernel that moves Adam's bytes with
   trivial math (read p, g, m, v; write p, m, v: 28 bytes an element; serial or parallel as
   the kernel), the fraction of the roofline the kernel reaches and its GB/s;
   ``torch.optim.Adam(fused=True).step()`` in a process of its own.

The same for gradient-norm clipping's factor (``clip_norm``: one reduction over g, 4 bytes an
element; torch's ``clip_grad_norm_`` also scales g). Writes adam_roofline.json.

    python benchmarks/speed/adam_roofline.py [--quick] [--out DIR]
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse

import numpy as np
import timing

SIZES = [10**4, 10**5, 10**6, 10**7]
# beta1, beta2, eps, lr, t, folded, wd, shrink, decayed
SCALARS = (0.9, 0.999, 1e-8, 1e-3, 1000, False, 0.0, 1.0, 0)
CLIP_SCALARS = (1e9, 1e-6, True)  # max_norm far above the norm: the factor stays 1
BYTES = 28  # per element: read p, g, m, v; write p, m, v (float32)


def repeats(n, quick):
    return 3 if quick else 7 if n >= 10**6 else 21


def roofline_kernel(n):
    """Adam's bytes with trivial math: read p, g, m, v; write p, m, v. Serial below
    ``dispatch.PARALLEL_MIN`` elements and parallel from there, as the fused kernel."""
    from numba import njit, prange

    from accel import dispatch

    parallel = n >= dispatch.PARALLEL_MIN

    @njit(parallel=parallel, cache=parallel)  # one cache entry per name: the parallel one's
    def adam_bytes(p, g, m, v):
        for i in prange(p.size):
            gi = g[i]
            m[i] = m[i] + gi
            v[i] = v[i] - gi
            p[i] = p[i] + gi

    return adam_bytes


def inputs(n, rng):
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * 1e-3
    m = rng.standard_normal(n, dtype=np.float32) * 1e-3
    v = np.abs(rng.standard_normal(n, dtype=np.float32)) * 1e-6
    return p, g, m, v


def validate(p, g, m, v):
    """Largest |kernel − reference| over p, m, v after one step from copies of the state,
    relative to the largest |value|; raises when above float32 rounding."""
    from accel import dispatch, functional

    want = [a.copy() for a in (p, g, m, v)]
    got = [a.copy() for a in (p, g, m, v)]
    functional.adam(*want, functional.clip_array(p), *SCALARS)
    dispatch.optimizer_step(functional.adam, got[0], got[1], (got[2], got[3]), SCALARS)
    err = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
              for a, b in zip(got, want))
    if err > 1e-5:
        raise SystemExit(f"the Adam kernel does not match the reference at n={p.size}: "
                         f"relative error {err:.2e}")
    return err


def validate_clip(g):
    """Relative difference of the kernel's clipping factor from the reference's, for a norm
    above max_norm (a factor below 1); raises when above rounding."""
    from accel import dispatch, functional

    want, got = functional.clip_array(g), functional.clip_array(g)
    functional.clip_factor(g, want, 1.0, 1e-6, True)
    dispatch.Site(functional.clip_factor)(g, got, scalars=(1.0, 1e-6, True))
    err = abs(float(got[0]) - float(want[0])) / float(want[0])
    if err > 1e-6:
        raise SystemExit(f"the clip_factor kernel does not match the reference at n={g.size}: "
                         f"{got[0]} vs {want[0]}")
    return err


def torch_worker(sizes, quick):
    """Seconds of torch's fused Adam step and of clip_grad_norm_ per size."""
    import torch

    torch.manual_seed(0)
    res = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n) * 1e-3
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
        res[f"adam/{n}"] = timing.median(opt.step, repeats(n, quick), min_time=0.2)
        res[f"clip/{n}"] = timing.median(lambda: torch.nn.utils.clip_grad_norm_([p], 1e9),
                                         repeats(n, quick), min_time=0.2)
    return res


def measure(sizes, quick, torch_rows):
    from accel import dispatch, functional

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        p, g, m, v = inputs(n, rng)
        err = validate(p, g, m, v)
        clip = functional.clip_array(p)
        reps = repeats(n, quick)
        ref = timing.median(lambda: functional.adam(p, g, m, v, clip, *SCALARS),
                            max(3, reps // 3))
        site = dispatch.Site(functional.adam)  # as an optimizer calls it
        fused = timing.median(lambda: site(p, g, m, v, clip, scalars=SCALARS), reps,
                              min_time=0.2)
        path = dispatch.last_path("adam")
        adam_bytes = roofline_kernel(n)
        roof = timing.median(lambda: adam_bytes(p, g, m, v), reps, min_time=0.2)
        row = dict(op="adam", n=n, dtype="float32", path=path, max_rel_error=err,
                   reference_s=ref, fused_s=fused, roofline_s=roof,
                   fraction_of_roofline=roof / fused, fused_GBps=BYTES * n / fused / 1e9,
                   roofline_GBps=BYTES * n / roof / 1e9, speedup_vs_reference=ref / fused)
        rows.append(with_torch(row, torch_rows.get(f"adam/{n}")))

        clip_err = validate_clip(g)
        clip_site = dispatch.Site(functional.clip_factor)
        ref = timing.median(lambda: functional.clip_factor(g, clip, *CLIP_SCALARS), reps)
        fused = timing.median(lambda: clip_site(g, clip, scalars=CLIP_SCALARS), reps,
                              min_time=0.2)
        row = dict(op="clip_norm", n=n, dtype="float32", path=dispatch.last_path("clip_factor"),
                   max_rel_error=clip_err, reference_s=ref, fused_s=fused,
                   fused_GBps=4 * n / fused / 1e9, speedup_vs_reference=ref / fused)
        rows.append(with_torch(row, torch_rows.get(f"clip/{n}")))
    return rows


def with_torch(row, torch_s):
    """``row`` with torch's time and the fused/torch ratio, when torch ran."""
    if torch_s is not None:
        row.update(torch_s=torch_s, fused_over_torch=row["fused_s"] / torch_s)
    return row


def print_table(rows):
    nan = float("nan")
    print(f"{'op':<10}{'n':>8}{'path':>6}{'ref ms':>10}{'fused ms':>10}{'roof ms':>10}"
          f"{'%roof':>7}{'GB/s':>7}{'x ref':>7}{'torch ms':>10}{'/torch':>7}")
    for r in rows:
        print(f"{r['op']:<10}{r['n']:>8.0e}{r['path']:>6}{r['reference_s'] * 1e3:10.3f}"
              f"{r['fused_s'] * 1e3:10.3f}{r.get('roofline_s', nan) * 1e3:10.3f}"
              f"{100 * r.get('fraction_of_roofline', nan):6.0f}%{r['fused_GBps']:7.1f}"
              f"{r['speedup_vs_reference']:7.1f}{r.get('torch_s', nan) * 1e3:10.3f}"
              f"{r.get('fused_over_torch', nan):7.2f}")


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="1e4 and 1e5 only, 3 repeats")
    ap.add_argument("--no-torch", action="store_true", help="accel's rows only")
    timing.add_out(ap, "adam_roofline.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = SIZES[:2] if args.quick else SIZES
    if args.worker:
        timing.reply(torch_worker(sizes, args.quick))
        return 0
    load = timing.check_load()
    torch_rows, why = timing.torch_rows(__file__, args)
    rows = measure(sizes, args.quick, torch_rows)
    print_table(rows)
    meta = timing.machine(load, quick=args.quick, torch=torch_rows.get("torch"),
                          torch_threads=torch_rows.get("torch_threads"), torch_skipped=why)
    timing.write_json(args.out, "adam_roofline", dict(meta=meta, rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
