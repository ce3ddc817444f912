"""Threads by the size of the work: accel with its defaults against the same work pinned to
one thread, on a quiet machine and with one core kept busy, beside torch.

Two workloads, each a process of its own (whole-process wall clock, imports excluded):

- ``optimizers``: the book's optimizer comparison, 5 optimizers (SGD 0.01, Momentum 0.01,
  AdaGrad 0.01, RMSProp 0.001, Adam 0.001) × ``--iterations`` steps of the 784-100×4-10 ReLU
  MLP at batch 128, by hand as the book's script does (``net.gradient``, ``opt.update``);
- ``search``: the book's hyperparameter search's work, ``--trials`` trainings of ``--steps``
  steps of 784-100×6-10 at batch 100 with SGD (lr and weight decay log-uniform).

Each runs as accel with its defaults ("default": no setting at all), accel pinned
(``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=NUMBA_NUM_THREADS=1``), and the same loops in torch
with its defaults and pinned (``torch.set_num_threads(1)`` too); on a quiet machine and with a
busy loop this script starts on one core and stops after each run. Rounds alternate every
configuration; medians and spreads (min–max) over rounds, ratios per round. Also the search
split over 2 worker processes against 1 (wall clock). Data are random arrays of the real
shapes (the timing does not depend on the values). Writes thread_policy.json and .png.

    python benchmarks/speed/thread_policy.py [--rounds 3] [--iterations 1000] [--trials 20]
        [--steps 200] [--no-torch] [--out DIR] [--quick]
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import timing
from timing import spread

PINNED = timing.ONE_THREAD
OPTIMIZERS = (("SGD", 0.01), ("Momentum", 0.01), ("AdaGrad", 0.01), ("RMSProp", 0.001),
              ("Adam", 0.001))
CONFIGS = ("accel default", "accel pinned", "torch default", "torch pinned")
BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


# -- the work, in a worker process


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 784)).astype(np.float32), rng.integers(0, 10, n)


def accel_work(workload, a):
    from accel import MultiLayerNet, optim

    if workload == "optimizers":
        x, t = _data(1024)
        for name, lr in OPTIMIZERS:
            net = MultiLayerNet(784, [100] * 4, 10, seed=0, backend="numpy")
            opt = getattr(optim, name)(lr=lr)
            rng = np.random.default_rng(1)
            for _ in range(a.iterations):
                idx = rng.choice(len(x), 128)
                opt.update(net.params, net.gradient(x[idx], t[idx]))
        return
    x, t = _data(500)
    rng = np.random.default_rng(2)
    for trial in range(a.trials):
        lr, wd = 10 ** rng.uniform(-6, -2), 10 ** rng.uniform(-8, -4)
        net = MultiLayerNet(784, [100] * 6, 10, seed=trial, weight_decay=wd, backend="numpy")
        opt = optim.SGD(lr=lr)
        for _ in range(a.steps):
            idx = rng.choice(len(x), 100)
            opt.update(net.params, net.gradient(x[idx], t[idx]))


def torch_work(workload, a, pinned):
    import torch

    if pinned:
        torch.set_num_threads(1)

    def mlp(hidden):
        sizes = [784, *hidden, 10]
        mods = []
        for i in range(len(sizes) - 1):
            mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                mods.append(torch.nn.ReLU())
        return torch.nn.Sequential(*mods)

    loss_fn = torch.nn.CrossEntropyLoss()

    def train(model, opt, x, t, steps, batch, rng):
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(x), batch))
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), t[idx]).backward()
            opt.step()

    if workload == "optimizers":
        x, t = (torch.from_numpy(v) for v in _data(1024))
        for name, lr in OPTIMIZERS:
            torch.manual_seed(0)
            model = mlp([100] * 4)
            cls = {"SGD": torch.optim.SGD, "Momentum": torch.optim.SGD,
                   "AdaGrad": torch.optim.Adagrad, "RMSProp": torch.optim.RMSprop,
                   "Adam": torch.optim.Adam}[name]
            kw = {"momentum": 0.9} if name == "Momentum" else {}
            train(model, cls(model.parameters(), lr=lr, **kw), x, t, a.iterations, 128,
                  np.random.default_rng(1))
        return
    x, t = (torch.from_numpy(v) for v in _data(500))
    rng = np.random.default_rng(2)
    for trial in range(a.trials):
        lr, wd = 10 ** rng.uniform(-6, -2), 10 ** rng.uniform(-8, -4)
        torch.manual_seed(trial)
        model = mlp([100] * 6)
        train(model, torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd), x, t,
              a.steps, 100, rng)


# -- the thresholds: where a second thread starts to pay, quiet and with a busy core

PRODUCTS = ((128, 100, 100), (128, 784, 100), (512, 784, 256), (1024, 784, 1024),
            (2048, 1024, 2048), (2048, 2048, 2048), (4096, 4096, 2048))
KERNEL_SIZES = (10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6, 3 * 10**6, 10**7)


def _median(fn):
    """Median seconds of ``fn()`` over at least 5 calls and 0.3 s."""
    return timing.median(fn, 5, min_time=0.3)


def thresholds_worker():
    """Seconds of matrix products on 1 and on all BLAS threads, and of Adam's kernel serial
    and parallel (Numba's threading layer as NUMBA_THREADING_LAYER says), by size."""
    import numba
    from accel.kernels import guard_record
    from threadpoolctl import ThreadpoolController

    from accel import dispatch

    rng = np.random.default_rng(0)
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    cores = os.cpu_count()
    products = []
    for n, k, m in PRODUCTS:
        a = rng.standard_normal((n, k)).astype(np.float32)
        b = rng.standard_normal((k, m)).astype(np.float32)
        row = dict(shape=[n, k, m], flop=2 * n * k * m)
        for threads in (1, cores):
            for lib in libs:
                lib.set_num_threads(threads)
            row[f"threads_{threads}_s"] = _median(lambda: a @ b)
        products.append(row)
    from accel import functional as F

    mod = dispatch.kernels("optim", "cpu")
    record = np.zeros(guard_record.FLAGS, np.int64)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 10.0, 0.0, 0.0, 1.0, 0.0)
    kernels = []
    for size in KERNEL_SIZES:
        p, g = rng.standard_normal(size, dtype=np.float32), rng.standard_normal(
            size, dtype=np.float32)
        m, v, clip = np.zeros_like(p), np.zeros_like(p), F.clip_array(p)
        row = dict(size=size)
        for how, table in (("serial", mod.SERIAL), ("parallel", mod.KERNELS)):
            kernel = table["adam"]
            row[f"{how}_s"] = _median(lambda: kernel(p, g, m, v, clip, *scalars, record))
        kernels.append(row)
    return dict(products=products, kernels=kernels, layer=numba.threading_layer(),
                cores=cores)


def thresholds(a):
    """The thresholds' rows for each Numba threading layer, quiet and with a busy core."""
    out = {}
    for condition in ("quiet", "busy"):
        for layer in ("omp", "workqueue"):
            env = dict(NUMBA_THREADING_LAYER=layer)
            if condition == "busy":
                with Busy(600):
                    res = timing.run_worker(__file__, "--worker", "thresholds", env=env)
            else:
                res = timing.run_worker(__file__, "--worker", "thresholds", env=env)
            out[f"{condition} {layer}"] = res
            many = f"threads_{res['cores']}_s"
            print(f"thresholds {condition} {res['layer']}: " + ", ".join(
                f"{r['flop'] / 1e6:.0f} MFLOP {r['threads_1_s'] * 1e3:.2f}/"
                f"{r[many] * 1e3:.2f} ms" for r in res["products"])
                + " | Adam " + ", ".join(
                f"{r['size']:.0e} {r['serial_s'] * 1e3:.2f}/{r['parallel_s'] * 1e3:.2f} ms"
                for r in res["kernels"]), flush=True)
    return out


def worker(a):
    if a.worker == "thresholds":
        timing.reply(thresholds_worker())
        return
    who, workload, how = a.worker.split(":")
    if who == "accel":  # imports outside the timing, as torch's: Numba and the kernel modules
        from accel import dispatch  # (loaded on first use), not their compiled code

        for family in ("optim", "layers", "clip"):
            dispatch.kernels(family, "cpu")
    else:
        import torch  # noqa: F401
    t0 = time.perf_counter()
    if who == "accel":
        accel_work(workload, a)
    else:
        torch_work(workload, a, how == "pinned")
    timing.reply({"seconds": time.perf_counter() - t0})


# -- the rounds


def run(kind, workload, a, env_extra=()):
    who, how = kind.split()
    env = dict(PINNED if how == "pinned" else {}, **dict(env_extra))
    try:
        return timing.run_worker(__file__, "--worker", f"{who}:{workload}:{how}",
                                 "--iterations", a.iterations, "--trials", a.trials,
                                 "--steps", a.steps, env=env, timeout=a.timeout)["seconds"]
    except subprocess.TimeoutExpired:
        return float(a.timeout)  # a lower bound: the JSON lists the runs that hit it


def search_split(a, workers):
    """Wall seconds of the search work shared by ``workers`` accel processes (defaults)."""
    share = -(-a.trials // workers)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "accel:search:default",
                               "--iterations", "0", "--trials", str(share), "--steps",
                               str(a.steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(workers)]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read().decode()[-3000:])
    return time.perf_counter() - t0


class Busy:
    """A process that keeps one core busy while the block runs (bounded: it ends itself)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c",
                                      BUSY.format(seconds=self.seconds)])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def fmt(s, unit=" s", digits=2):
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def plot(summary, configs, path, timeout=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(w, c) for w in ("optimizers", "search") for c in ("quiet", "busy")]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    colors = {"accel default": "tab:blue", "accel pinned": "lightsteelblue",
              "torch default": "tab:orange", "torch pinned": "navajowhite"}
    width = 0.8 / len(configs)
    for k, cfg in enumerate(configs):
        med = [summary[w][c][cfg]["median"] for w, c in groups]
        lo = [m - summary[w][c][cfg]["min"] for m, (w, c) in zip(med, groups)]
        hi = [summary[w][c][cfg]["max"] - m for m, (w, c) in zip(med, groups)]
        xs = np.arange(len(groups)) + (k - (len(configs) - 1) / 2) * width
        stopped = [timeout is not None and m >= timeout for m in med]
        ax.bar(xs, med, width, yerr=[lo, hi], color=colors[cfg], label=cfg, capsize=2,
               hatch=["//" if s else "" for s in stopped])
        for x, m, h, s in zip(xs, med, hi, stopped):  # a stopped run took at least that
            ax.text(x, (m + h) * 1.06, f"≥ {m:.0f}\nstopped" if s else f"{m:.1f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(groups)),
                  [f"{w}\n{'one core busy' if c == 'busy' else 'quiet'}" for w, c in groups])
    ax.set_yscale("log")  # the stopped runs are 20x the others
    top = max(summary[w][c][cfg]["max"] for w, c in groups for cfg in configs)
    ax.set_ylim(1, top * 3)
    ax.set_ylabel("seconds (whole work, medians over rounds; log scale)")
    ax.set_title("accel with no settings against pinned to one thread, beside torch "
                 f"({os.cpu_count()} cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of alternating processes (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=1000,
                    help="steps per optimizer (default: %(default)s)")
    ap.add_argument("--trials", type=int, default=20,
                    help="trainings of the search work (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=200,
                    help="steps per search training (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=240,
                    help="seconds a run may take; a run stopped there counts as that long, a "
                         "lower bound (default: %(default)s)")
    ap.add_argument("--no-torch", action="store_true", help="accel's rows only")
    ap.add_argument("--no-thresholds", action="store_true",
                    help="skip the products and kernels by size (the thresholds' evidence)")
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 50 iterations, 2 trials of 20 steps (seconds; the tests)")
    timing.add_out(ap, "thread_policy.json and .png")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.iterations, a.trials, a.steps = 1, 50, 2, 20
    if a.worker:
        worker(a)
        return 0
    configs = CONFIGS[:2] if a.no_torch else CONFIGS
    measured_thresholds = None if a.no_thresholds else thresholds(a)
    times = {w: {c: {cfg: [] for cfg in configs} for c in ("quiet", "busy")}
             for w in ("optimizers", "search")}
    split = {"1 worker": [], "2 workers": []}
    timed_out = []
    load_before = timing.check_load()
    for r in range(a.rounds):
        for condition in ("quiet", "busy"):
            for workload in ("optimizers", "search"):
                for cfg in (configs if r % 2 == 0 else configs[::-1]):
                    if condition == "busy":
                        with Busy(600):
                            s = run(cfg, workload, a)
                    else:
                        s = run(cfg, workload, a)
                    times[workload][condition][cfg].append(s)
                    if s >= a.timeout:
                        timed_out.append(f"round {r + 1} {condition} {workload} {cfg}")
                    print(f"round {r + 1}/{a.rounds} {condition:5s} {workload:10s} "
                          f"{cfg:13s} {s:7.2f} s" + (" (stopped: at least)"
                                                      if s >= a.timeout else ""), flush=True)
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            split[f"{workers} worker{'s' if workers > 1 else ''}"].append(
                search_split(a, workers))
        print(f"round {r + 1}/{a.rounds} search over 1 / 2 worker processes: "
              f"{split['1 worker'][-1]:.2f} / {split['2 workers'][-1]:.2f} s", flush=True)

    summary = {w: {c: {cfg: spread(v) for cfg, v in by_cfg.items()}
                   for c, by_cfg in by_c.items()} for w, by_c in times.items()}
    ratios = {}
    for w, by_c in times.items():
        for c, by_cfg in by_c.items():
            d, p = by_cfg["accel default"], by_cfg["accel pinned"]
            ratios[f"{w} {c}: accel default / accel pinned"] = spread(
                [x / y for x, y in zip(d, p)])
            if not a.no_torch:
                ratios[f"{w} {c}: accel default / torch default"] = spread(
                    [x / y for x, y in zip(d, by_cfg["torch default"])])
                ratios[f"{w} {c}: torch default / torch pinned"] = spread(
                    [x / y for x, y in zip(by_cfg["torch default"], by_cfg["torch pinned"])])
    ratios["search: 2 workers / 1 worker (wall clock)"] = spread(
        [x / y for x, y in zip(split["2 workers"], split["1 worker"])])
    targets = {"quiet: accel default / accel pinned": 1.10,
               "busy: accel default / accel pinned": 1.15,
               "quiet: accel default / torch default": 0.6,
               "busy: accel default / torch default": 0.5,
               "search: 2 workers / 1 worker (wall clock)": 0.55}
    print(f"\n{a.rounds} rounds on {os.cpu_count()} cores; seconds, median (min–max):")
    for w, by_c in summary.items():
        for c, by_cfg in by_c.items():
            print(f"  {w:10s} {c:5s} " + ", ".join(f"{cfg} {fmt(s)}"
                                                    for cfg, s in by_cfg.items()))
    print("ratios, median (min–max), target:")
    for name, s in ratios.items():
        target = next((v for k, v in targets.items() if name.endswith(k) or name == k), None)
        mark = "" if target is None else (" ✓" if s["median"] <= target else " ✗") + \
            f" (≤ {target})"
        print(f"  {name}: {fmt(s, '×', 3)}{mark}")
    meta = timing.machine(load_before, rounds=a.rounds, iterations=a.iterations,
                          trials=a.trials, steps=a.steps, targets=targets, timeout=a.timeout,
                          timed_out=timed_out)
    path = timing.write_json(a.out, "thread_policy", dict(
        meta=meta, summary=summary, ratios=ratios, times=times, search_split=split,
        thresholds=measured_thresholds))
    try:
        plot(summary, configs, path.with_suffix(".png"), a.timeout)
    except ImportError:
        print("no matplotlib: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
