"""What accel costs before its first step: ``import accel`` and the first fused Adam and
batch-norm calls, which compile their kernels, with a cold and a warm on-disk cache.

Each round gives Numba an empty cache folder (``NUMBA_CACHE_DIR``) and runs two fresh
processes on it: the first compiles the kernels and writes the cache (cold), the second loads
them from it (warm). Each process times ``import accel``, then, in the order of llm.c's
dev/cuda files, the first Adam step over 1000 float32 elements through ``accel.dispatch``
(compile + run) validated against the xp reference, and the first batch-norm forward +
backward at 8x4, validated the same way. Medians over rounds. Writes compile_time.json.

    python benchmarks/speed/compile_time.py [--quick] [--rounds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import timing

ADAM_SCALARS = (0.9, 0.999, 1e-8, 1e-3, 1, False, 0.0, 1.0, 0)
STEPS = ("import_accel_s", "first_adam_call_s", "first_bn_fwd_bwd_call_s")


def worker():
    """Seconds of ``import accel`` and of the first fused Adam and batch-norm calls, each
    checked against the reference; and the path each took ("cpu": the kernel ran)."""
    t0 = time.perf_counter()
    from accel import dispatch, functional
    t_import = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(1000, dtype=np.float32), rng.standard_normal(1000, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    want = [a.copy() for a in (p, g, m, v)]
    t0 = time.perf_counter()
    dispatch.optimizer_step(functional.adam, p, g, (m, v), ADAM_SCALARS)
    t_adam = time.perf_counter() - t0
    functional.adam(*want, functional.clip_array(p), *ADAM_SCALARS)
    adam_err = max(float(np.abs(a - b).max())
                   for a, b in zip((p, m, v), (want[0], want[2], want[3])))

    x = rng.standard_normal((8, 4), dtype=np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    grads = [np.empty(4, np.float32) for _ in range(4)]
    t0 = time.perf_counter()
    out, mean, invstd = dispatch.batchnorm_forward_train(x, gamma, beta, beta.copy(),
                                                         gamma.copy(), 0.9, 1e-5)
    dx = dispatch.batchnorm_backward(x, x, gamma, mean, invstd, *grads[:2])
    t_bn = time.perf_counter() - t0
    ref_out, ref_mean, ref_invstd = functional.batchnorm_forward_train(
        x, gamma, beta, beta.copy(), gamma.copy(), 0.9, 1e-5)
    ref_dx = functional.batchnorm_backward(x, x, gamma, ref_mean, ref_invstd, *grads[2:])
    bn_err = max(float(np.abs(a - b).max()) for a, b in ((out, ref_out), (dx, ref_dx)))
    return dict(import_accel_s=t_import, first_adam_call_s=t_adam, first_bn_fwd_bwd_call_s=t_bn,
                adam_path=dispatch.last_path("adam"),
                bn_path=dispatch.last_path("batchnorm_backward"), max_abs_error=max(adam_err,
                                                                                   bn_err))


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds, each a cold and a warm process (default: 3; 1 with --quick)")
    timing.add_out(ap, "compile_time.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        timing.reply(worker())
        return 0
    n_rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    if n_rounds < 1:
        ap.error(f"--rounds must be >= 1, got {n_rounds}")
    load = timing.check_load()
    runs = {"cold": [], "warm": []}
    os.environ.pop("ACCEL_KERNELS", None)  # the default paths, in the workers too
    for r in range(n_rounds):
        with tempfile.TemporaryDirectory() as cache:
            for cache_state in runs:
                res = timing.run_worker(__file__, "--worker", env={"NUMBA_CACHE_DIR": cache})
                if res["adam_path"] != "cpu" or res["bn_path"] != "cpu" \
                        or res["max_abs_error"] > 1e-5:
                    raise SystemExit("the first calls did not run the kernels or do not match "
                                     f"the reference: {res}")
                runs[cache_state].append(res)
        print(f"round {r + 1}/{n_rounds}: " + "; ".join(
            f"{c} " + ", ".join(f"{k[:-2]} {runs[c][-1][k]:.3f} s" for k in STEPS)
            for c in runs), flush=True)
    rows = [dict(op="compile", cache=f"{c} cache", **{k: timing.spread([x[k] for x in v])
                                                      for k in STEPS}) for c, v in runs.items()]
    for row in rows:
        print(f"{row['cache']} (median of {n_rounds}): import accel "
              f"{row['import_accel_s']['median'] * 1e3:.0f} ms, first Adam call "
              f"{row['first_adam_call_s']['median']:.2f} s, first BN fwd+bwd "
              f"{row['first_bn_fwd_bwd_call_s']['median']:.2f} s")
    meta = timing.machine(load, quick=args.quick, rounds=n_rounds)
    timing.write_json(args.out, "compile_time", dict(meta=meta, rows=rows, runs=runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
