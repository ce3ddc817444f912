"""Does the thread count change the results, and what does pinning BLAS to one thread cost?

The MLP of compare_optimizers (784-100×4-10, Adam 1e-3, batch 128, float32, NumPy backend)
takes ``--steps`` training steps from the same seed in fresh processes with
``OMP_NUM_THREADS`` = 1 and 2, each with free BLAS threads and inside
``accel.blas_threads(1)``. Printed and saved: whether the parameters are bit-identical across
thread counts in each mode (and the largest difference), and the median step time of each
configuration over ``--rounds`` rounds that alternate the configurations, so a noisy machine
loads them alike.

    python benchmarks/thread_determinism.py [--steps 20] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np

CONFIGS = [(threads, pinned) for threads in (1, 2) for pinned in (False, True)]
DEFAULTS = {"steps": 20, "rounds": 5}
QUICK = {"steps": 4, "rounds": 1}


def worker(steps: int, pinned: bool, out: str) -> None:
    import contextlib
    import time

    import accel
    from accel import MultiLayerNet, optim

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784)).astype(np.float32)
    t = rng.integers(0, 10, 128)
    net = MultiLayerNet(784, [100] * 4, 10, seed=0, backend="numpy")
    opt = optim.Adam(1e-3)
    x, t = net.prepare(x, t)
    times = []
    with accel.blas_threads(1) if pinned else contextlib.nullcontext():
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.update(net.params, net.loss_and_grads(x, t)[1])
            times.append(time.perf_counter() - t0)
        np.save(out, net.params.flat)
        for _ in range(200):  # the timing: after the compared steps, warm
            t0 = time.perf_counter()
            opt.update(net.params, net.loss_and_grads(x, t)[1])
            times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": float(np.median(times[steps:]))}))


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(int(sys.argv[2]), sys.argv[3] == "pinned", sys.argv[4])
    p = common.parser("thread_determinism", __doc__, datasets_allowed=())
    common.option(p, "--steps", DEFAULTS, QUICK, "Adam steps compared between thread counts")
    common.option(p, "--rounds", DEFAULTS, QUICK, "timing rounds")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["steps", "rounds"])
    times = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(cfg["rounds"]):
            for threads, pinned in CONFIGS:
                out = Path(tmp) / f"{threads}-{pinned}.npy"
                env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                           OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                res = subprocess.run(
                    [sys.executable, __file__, "--worker", str(cfg["steps"]),
                     "pinned" if pinned else "free", str(out)],
                    env=env, capture_output=True, text=True, check=True)
                times[(threads, pinned)].append(json.loads(res.stdout.splitlines()[-1])
                                                ["step_s"])
        params = {c: np.load(Path(tmp) / f"{c[0]}-{c[1]}.npy") for c in CONFIGS}
    results = {}
    for pinned in (False, True):
        a, b = params[(1, pinned)], params[(2, pinned)]
        mode = "blas_threads(1)" if pinned else "free BLAS threads"
        results[mode] = {
            "bit_identical_1_vs_2_threads": bool(np.array_equal(a, b)),
            "max_abs_diff": float(np.abs(a - b).max()),
            "step_ms": {f"{t} thread(s)": 1e3 * float(np.median(times[(t, pinned)]))
                        for t in (1, 2)},
            "step_ms_rounds": {f"{t} thread(s)": [1e3 * s for s in times[(t, pinned)]]
                               for t in (1, 2)},
        }
    free2 = results["free BLAS threads"]["step_ms"]["2 thread(s)"]
    pin2 = results["blas_threads(1)"]["step_ms"]["2 thread(s)"]
    summary = {f"{mode}: identical across 1/2 threads": r["bit_identical_1_vs_2_threads"]
               for mode, r in results.items()}
    summary["step time at 2 threads, pinned / free"] = f"{pin2:.3f} / {free2:.3f} ms " \
                                                       f"(×{pin2 / free2:.2f})"
    return common.finish(run, cfg, results, None, summary, load_before=os.getloadavg())


if __name__ == "__main__":
    common.cli(main)
