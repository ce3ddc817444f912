"""What gradient-norm clipping adds to an optimizer step: accel's ``clip_norm`` against
``torch.nn.utils.clip_grad_norm_`` followed by the torch optimizer, on one thread.

Each row is a median over many steps in a process of its own (one BLAS, OpenMP and Numba
thread), in rounds that alternate the processes so each gets the same share of a noisy
machine; medians and spreads (min–max) over rounds, ratios taken per round:

- accel: ``optim.Adam(clip_norm=...)`` over one float32 array of N parameters (the norm is
  one fused reduction writing the factor on the device; the update kernel scales g by it),
  and the same step without clipping;
- torch: ``clip_grad_norm_([p], ...)`` (the norm, then g scaled in place) and
  ``Adam(fused=True).step()``, and the step alone.

The clipping threshold is far above the norm, so the parameters move the same way in every
repetition (the factor is 1; both libraries still compute and apply it).

    python benchmarks/speed/clip_cost.py [--n 10000000] [--rounds 5] [--steps 25] [--out DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import timing

KINDS = ("accel", "accel_clip", "torch", "torch_clip")


def median_ms(fn, n):
    """Median milliseconds of ``fn()`` over ``n`` calls (after 3 untimed calls)."""
    return timing.median(fn, n, warmup=3) * 1e3


def worker(kind, n, steps):
    clip = kind.endswith("_clip")
    if kind.startswith("accel"):
        from accel import dispatch, optim

        rng = np.random.default_rng(0)
        params = {"w": rng.standard_normal(n, dtype=np.float32)}
        grads = {"w": rng.standard_normal(n, dtype=np.float32)}
        opt = optim.Adam(lr=1e-6, clip_norm=1e9 if clip else None)
        ms = median_ms(lambda: opt.update(params, grads), steps)
        return dict(ms=ms, paths=dispatch.last_path())
    import torch

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = torch.optim.Adam([p], lr=1e-6, fused=True)

    def step():
        if clip:
            torch.nn.utils.clip_grad_norm_([p], 1e9)
        opt.step()

    return dict(ms=median_ms(step, steps), torch=torch.__version__)


def run_worker(kind, n, steps):
    return timing.run_worker(__file__, "--worker", kind, "--n", n, "--steps", steps,
                             env=timing.ONE_THREAD, timeout=600)


def spread(values):
    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--n", type=int, default=10**7, help="parameters (default 1e7)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--steps", type=int, default=25, help="timed steps a process (default 25)")
    timing.add_out(ap, "clip_cost.json")
    ap.add_argument("--no-torch", action="store_true", help="accel's rows only")
    ap.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        timing.reply(worker(args.worker, args.n, args.steps))
        return
    for name in ("n", "rounds", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    kinds = KINDS[:2] if args.no_torch else KINDS
    if not args.no_torch and timing.torch_missing():
        print(f"{timing.torch_missing()}: accel's rows only")
        kinds = KINDS[:2]
    rounds = {k: [] for k in kinds}
    load_before = timing.check_load()
    for r in range(args.rounds):
        for kind in kinds:
            rounds[kind].append(run_worker(kind, args.n, args.steps)["ms"])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {rounds[k][-1]:.2f} ms" for k in kinds), flush=True)
    summary = {k: dict(median_ms=float(np.median(v)), rounds_ms=v) for k, v in rounds.items()}
    added = {lib: [c - p for c, p in zip(rounds[f"{lib}_clip"], rounds[lib])]
             for lib in ("accel", "torch") if lib in rounds}
    print(f"Adam over {args.n:.0e} float32 parameters, one thread, ms: median (min–max) over "
          f"{args.rounds} rounds")
    for lib in added:
        print(f"  {lib:<6} step {spread(rounds[lib])}, with clipping "
              f"{spread(rounds[lib + '_clip'])}, clipping adds {spread(added[lib])}")
    if "torch" in added:
        ratio = [a / t for a, t in zip(rounds["accel_clip"], rounds["torch_clip"])]
        print(f"  clipped step, accel / torch: {spread(ratio)}")
        summary["clipped_step_accel_over_torch"] = dict(median=float(np.median(ratio)),
                                                       rounds=ratio)
    summary["clipping_adds_ms"] = {k: dict(median=float(np.median(v)), rounds=v)
                                   for k, v in added.items()}
    meta = timing.machine(load_before, n=args.n, rounds=args.rounds, steps=args.steps)
    timing.write_json(args.out, "clip_cost", dict(meta=meta, summary=summary))

if __name__ == "__main__":
    main()
