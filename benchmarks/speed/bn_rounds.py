"""Batch-norm training forward + backward on the CPU: accel against torch, in rounds.

Each round runs two fresh processes, one after the other: accel (the fused kernel through
accel.dispatch, the xp reference, and batchnorm_roofline.py's two kernels with trivial math:
the roofline, which moves the compulsory bytes (read x, write out; read x, dy, write dx), and
the two-pass floor, which moves the bytes of the fused kernels (x, and x and dy, read once
more for the column sums)) and torch (native_batch_norm and its backward, as
batchnorm_roofline.py times it). Alternating processes give both the same share of a
noisy machine; the medians and the spread (min–max) over rounds are printed, and of the
accel/torch ratio per round.

    python benchmarks/speed/bn_rounds.py [--rounds 7] [--shape 1024 4096] [--out DIR]
        [--also FILE] [--malloc-heap]

``--also FILE`` times, in the accel process too, the kernels of another version of
kernels/batchnorm_cpu.py with the current argument order (e.g. ``git show
main:kernels/batchnorm_cpu.py > /tmp/bn_main.py``), called directly (outputs allocated
once), alternating with the current ones called the same way. "fused" goes through
accel.dispatch's sites that refill their own outputs, as a network's BatchNorm layer does
(so a steady loop maps no new pages).

``--malloc-heap`` runs both workers with glibc told to keep large blocks on its heap
(MALLOC_MMAP_THRESHOLD_=1 GiB, MALLOC_TRIM_THRESHOLD_=4 GiB): by default glibc maps each
fresh 16 MB array anew and the kernel zeroes its pages on first touch (~1 300 page faults
per fwd+bwd here), which costs more than the batch-norm kernels themselves on this machine.
torch allocates its outputs afresh on every call, and so does the xp reference.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import timing
from batchnorm_roofline import bn_case, roofline_kernels
from timing import spread


def load_kernels(path):
    """KERNELS of a batchnorm_cpu.py at ``path``, imported as a module of accel.kernels."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("accel.kernels.bn_other", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # Numba's on-disk cache finds the module by name
    spec.loader.exec_module(mod)
    return mod.KERNELS


def accel_worker(n, d, reps, also=None):
    from accel.kernels import batchnorm_cpu

    from accel import dispatch, functional

    roofline = roofline_kernels(n * d)
    c = bn_case(np, n, d, np.random.default_rng(1))
    x, dy, fwd_bwd = c.x, c.dy, c.fwd_bwd

    fused = timing.median(lambda: fwd_bwd(dispatch), reps, min_time=0.3)
    out, dx = np.empty_like(x), np.empty_like(x)
    roof = timing.median(lambda: roofline.bn(x, dy, out, dx), reps, min_time=0.3)
    two_pass = timing.median(lambda: roofline.bn_two_pass(x, dy, out, dx), reps, min_time=0.3)
    ref = timing.median(lambda: fwd_bwd(functional), max(3, reps // 3))
    import numba

    res = dict(fused_s=fused, roofline_s=roof, two_pass_floor_s=two_pass, reference_s=ref,
               path=dispatch.last_path("batchnorm_backward"), threads=numba.get_num_threads())
    if also:
        mean, invstd = (np.empty(d, np.float32) for _ in range(2))

        def direct(k):
            k["batchnorm_forward_train"](x, c.gamma, c.beta, c.rm, c.rv, 0.9, 1e-5, out, mean,
                                         invstd)
            k["batchnorm_backward"](dy, x, c.gamma, mean, invstd, c.dgamma, c.dbeta, dx)

        other = load_kernels(also)
        current, other_t = [], []
        for _ in range(3):  # alternating, in this process
            current.append(timing.median(lambda: direct(batchnorm_cpu.KERNELS), reps,
                                       min_time=0.2))
            other_t.append(timing.median(lambda: direct(other), reps, min_time=0.2))
        res.update(kernels_current_s=float(np.median(current)),
                   kernels_other_s=float(np.median(other_t)))
    return res


def torch_worker(n, d, reps):
    import torch

    torch.manual_seed(0)
    x, dy = torch.randn(n, d), torch.randn(n, d)
    g, b = torch.ones(d), torch.zeros(d)
    rm, rv = torch.zeros(d), torch.ones(d)

    def fwd_bwd():
        out, mean, invstd = torch.native_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
        return torch.ops.aten.native_batch_norm_backward(
            dy, x, g, rm, rv, mean, invstd, True, 1e-5, [True, True, True])

    with torch.no_grad():
        t = timing.median(fwd_bwd, reps, min_time=0.3)
    return dict(torch_s=t, torch=torch.__version__, threads=torch.get_num_threads())


def fmt(s, scale=1e3, unit=" ms"):
    return f"{s['median'] * scale:.2f}{unit} ({s['min'] * scale:.2f}–{s['max'] * scale:.2f})"


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=7,
                    help="rounds, each an accel process then a torch process (default: 7)")
    ap.add_argument("--shape", type=int, nargs=2, default=(1024, 4096), metavar=("N", "D"),
                    help="rows and columns of the batch-norm input (default: 1024 4096)")
    ap.add_argument("--reps", type=int, default=21,
                    help="timed runs per process, of which the median counts (default: 21)")
    ap.add_argument("--no-torch", action="store_true",
                    help="time accel only (no torch processes)")
    ap.add_argument("--malloc-heap", action="store_true",
                    help="workers keep large blocks on glibc's heap (no fresh pages per call)")
    ap.add_argument("--also", metavar="FILE",
                    help="another batchnorm_cpu.py to time beside the current one")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="folder for bn_rounds-<N>x<D>.json (default: print only)")
    ap.add_argument("--worker", choices=("accel", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n, d = args.shape
    if args.worker:
        res = (accel_worker(n, d, args.reps, args.also) if args.worker == "accel"
               else torch_worker(n, d, args.reps))
        timing.reply(res)
        return
    kinds = ["accel"] if args.no_torch else ["accel", "torch"]
    rounds = {k: [] for k in kinds}
    env = {}
    if args.malloc_heap:
        env.update(MALLOC_MMAP_THRESHOLD_=str(2**30), MALLOC_TRIM_THRESHOLD_=str(2**32))
    load_before = timing.check_load()
    for r in range(args.rounds):
        for kind in kinds:
            extra = ["--also", args.also] if args.also and kind == "accel" else []
            rounds[kind].append(timing.run_worker(__file__, "--worker", kind, "--shape", n, d,
                                                  "--reps", args.reps, *extra, env=env))
        line = ", ".join(f"{k} {v[-1].get('fused_s', v[-1].get('torch_s')) * 1e3:.2f} ms"
                         for k, v in rounds.items())
        print(f"round {r + 1}: {line}", flush=True)
    acc = rounds["accel"]
    summary = dict(fused=spread([a["fused_s"] for a in acc]),
                   roofline=spread([a["roofline_s"] for a in acc]),
                   reference=spread([a["reference_s"] for a in acc]),
                   two_pass_floor=spread([a["two_pass_floor_s"] for a in acc]),
                   fused_over_roofline=spread([a["fused_s"] / a["roofline_s"] for a in acc]),
                   fused_over_two_pass_floor=spread([a["fused_s"] / a["two_pass_floor_s"]
                                                     for a in acc]),
                   reference_over_fused=spread([a["reference_s"] / a["fused_s"] for a in acc]))
    if args.also:
        summary["kernels_current"] = spread([a["kernels_current_s"] for a in acc])
        summary["kernels_other"] = spread([a["kernels_other_s"] for a in acc])
        summary["other_over_current"] = spread([a["kernels_other_s"] / a["kernels_current_s"]
                                             for a in acc])
    if "torch" in rounds:
        summary["torch"] = spread([t["torch_s"] for t in rounds["torch"]])
        summary["fused_over_torch"] = spread([a["fused_s"] / t["torch_s"]
                                              for a, t in zip(acc, rounds["torch"])])
    print(f"batch norm fwd+bwd {n}x{d} float32, {args.rounds} rounds, median (min–max):")
    print(f"  accel fused    {fmt(summary['fused'])}   path {acc[0]['path']}")
    print(f"  roofline       {fmt(summary['roofline'])}")
    print(f"  reference      {fmt(summary['reference'])}")
    print(f"  two-pass floor {fmt(summary['two_pass_floor'])}")
    print(f"  fused/roofline {fmt(summary['fused_over_roofline'], 1, '×')}")
    print(f"  fused/floor    {fmt(summary['fused_over_two_pass_floor'], 1, '×')}")
    print(f"  reference/fused {fmt(summary['reference_over_fused'], 1, '×')}")
    if args.also:
        print(f"  kernels, called directly: current {fmt(summary['kernels_current'])}, "
              f"{args.also} {fmt(summary['kernels_other'])}, other/current "
              f"{fmt(summary['other_over_current'], 1, '×')}")
    if "torch" in summary:
        print(f"  torch          {fmt(summary['torch'])}   torch {rounds['torch'][0]['torch']}")
        print(f"  fused/torch    {fmt(summary['fused_over_torch'], 1, '×')}")
    if args.out:
        meta = timing.machine(load_before, shape=[n, d], dtype="float32", rounds=args.rounds,
                              reps=args.reps, also=args.also, malloc_heap=args.malloc_heap)
        timing.write_json(args.out, f"bn_rounds-{n}x{d}"
                          f"{'-malloc-heap' if args.malloc_heap else ''}",
                          dict(meta=meta, summary=summary, rounds=rounds))

if __name__ == "__main__":
    main()
