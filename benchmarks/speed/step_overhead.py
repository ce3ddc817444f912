"""The host's share of a training step: what accel adds to each fused call, and the step of a
tiny network (all overhead, no arithmetic) against torch's eager step, on one thread.

Rows, each a median over many calls in a process of its own (one BLAS, OpenMP and Numba
thread), in rounds that alternate the processes so each gets the same share of a noisy
machine; medians and spreads (min–max) over rounds, ratios taken per round:

- a fused call: Adam over 1000 float32 elements and batch norm's training forward at 4×8,
  the kernel called directly against the same call through ``accel.dispatch.Site`` (what the
  layers and optimizers use: the checks, the path and the outputs decided once per call
  site), ``Optimizer.update`` and a one-off ``dispatch.call``;
- a training step of the 8-8×4-2 MLP at batch 4 with Adam (``Trainer.step``: the non-finite
  guard, forward, backward, update), plain and with BatchNorm, against the same model in
  torch (``zero_grad``, forward, cross-entropy, ``backward``, ``Adam.step``).

    python benchmarks/speed/step_overhead.py [--rounds 7] [--steps 3000] [--out DIR] [--no-torch]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import timing
from timing import spread

SIZES = [8, 8, 8, 8, 8, 2]  # the tiny MLP: 8-8x4-2
BATCH = 4


def median_us(fn, n):
    """Median microseconds of ``fn()`` over ``n`` calls (after 300 untimed calls)."""
    return timing.median(fn, n, warmup=300) * 1e6


def calls_worker(n):
    """Microseconds of a fused call: the kernel directly, through a Site, and the rest."""
    from accel.kernels import guard_record

    from accel import dispatch, optim
    from accel import functional as F

    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(1000, dtype=np.float32), rng.standard_normal(1000, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    record = np.zeros(guard_record.FLAGS, np.int64)
    clip = F.clip_array(p)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 10.0, 0.0, 0.0, 1.0, 0.0)
    adam = dispatch.kernels("optim", "cpu").SERIAL["adam"]
    site = dispatch.Site(F.adam)
    opt = optim.Adam(lr=1e-3)
    params, grads = {"p": p}, {"p": g}
    out = dict(adam_kernel=median_us(lambda: adam(p, g, m, v, clip, *scalars, record), n),
               adam_site=median_us(lambda: site(p, g, m, v, clip, scalars=scalars), n),
               adam_update=median_us(lambda: opt.update(params, grads), n),
               adam_call=median_us(lambda: dispatch.call(F.adam, p, g, m, v, clip,
                                                         scalars=scalars), n // 4))
    x = rng.standard_normal((4, 8), dtype=np.float32)
    gamma, beta = np.ones(8, np.float32), np.zeros(8, np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    outs = [np.empty((4, 8), np.float32), np.empty(8, np.float32), np.empty(8, np.float32)]
    bn = dispatch.kernels("batchnorm", "cpu").SERIAL["batchnorm_forward_train"]
    bn_site = dispatch.Site(F.batchnorm_forward_train)
    bn_site.reuse = True
    out.update(bn_kernel=median_us(lambda: bn(x, gamma, beta, rm, rv, 0.9, 1e-5, *outs), n),
               bn_site=median_us(lambda: bn_site(x, gamma, beta, rm, rv, scalars=(0.9, 1e-5)),
                                 n),
               bn_call=median_us(lambda: dispatch.call(F.batchnorm_forward_train, x, gamma,
                                                       beta, rm, rv, scalars=(0.9, 1e-5)),
                                 n // 4))
    out["path"] = dispatch.last_path("adam")
    return out


def _data():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((BATCH, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], BATCH))


def accel_step_worker(batchnorm, n):
    from accel import MultiLayerNet, Trainer, dispatch, optim

    x, t = _data()
    net = MultiLayerNet(SIZES[0], SIZES[1:-1], SIZES[-1], batchnorm=batchnorm, seed=0,
                        backend="numpy")
    trainer = Trainer(net, optim.Adam(lr=1e-3), x, t, verbose=False)
    x, t = net.prepare(x, t)
    step_us = median_us(lambda: trainer.step(x, t), n)
    trainer.sync_guard()
    return dict(step_us=step_us, path=dispatch.last_path("adam"))


def torch_step_worker(batchnorm, n):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mods = []
    for i in range(len(SIZES) - 1):
        mods.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            if batchnorm:
                mods.append(torch.nn.BatchNorm1d(SIZES[i + 1]))
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, t = (torch.from_numpy(a) for a in _data())

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), t).backward()
        opt.step()

    return dict(step_us=median_us(step, n), torch=torch.__version__)


def fmt(s, unit=" µs", digits=1):
    return (f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})")


def run_worker(kind, steps):
    return timing.run_worker(__file__, "--worker", kind, "--steps", steps, env=timing.ONE_THREAD)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = ["plain", "BatchNorm"]
    xs = np.arange(2)
    for offset, who, color in ((-0.2, "accel", "tab:blue"), (0.2, "torch", "tab:orange")):
        vals = [summary.get(f"{who}_step"), summary.get(f"{who}_bn_step")]
        if vals[0] is None:
            continue
        med = [v["median"] for v in vals]
        err = [[v["median"] - v["min"] for v in vals], [v["max"] - v["median"] for v in vals]]
        axes[0].bar(xs + offset, med, 0.4, yerr=err, color=color, label=who, capsize=3)
        top = max(v["max"] for v in vals)
        for x, m, v, ratio in zip(xs + offset, med, vals, ("", "_bn")):
            text = f"{m:.0f} µs"
            if who == "accel" and f"accel_over_torch{ratio}" in summary:
                text += f"\n{summary[f'accel_over_torch{ratio}']['median']:.3f}× torch"
            axes[0].text(x, v["max"] + 0.02 * top, text, ha="center", va="bottom",
                         fontsize=8)
    axes[0].set_xticks(xs, labels)
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.1)
    axes[0].set_ylabel("µs per training step (host)")
    axes[0].set_title(f"8-8×4-2 MLP, batch {BATCH}, Adam, one thread")
    axes[0].legend()
    rows = [("Adam 1000", "adam"), ("BN fwd 4×8", "bn")]
    for k, (_, key) in enumerate(rows):
        kernel = summary[f"{key}_kernel"]["median"]
        site = summary[f"{key}_site"]["median"]
        call = summary[f"{key}_call"]["median"]
        axes[1].barh([3 * k + 2, 3 * k + 1, 3 * k], [kernel, site, call],
                     color=["tab:gray", "tab:blue", "tab:purple"])
        for y, val, name in ((3 * k + 2, kernel, "kernel"), (3 * k + 1, site, "Site"),
                             (3 * k, call, "dispatch.call")):
            axes[1].text(val, y, f" {name} {val:.1f} µs", va="center", fontsize=8)
    axes[1].set_yticks([1, 4], [r[0] for r in rows])
    axes[1].set_xlabel("µs per call")
    axes[1].set_title("a fused call: the kernel alone and through accel")
    axes[1].set_xlim(0, max(summary["adam_call"]["max"], summary["bn_call"]["max"]) * 1.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=7,
                    help="rounds of alternating processes (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=3000,
                    help="timed calls per process; the median is kept (default: %(default)s)")
    ap.add_argument("--no-torch", action="store_true", help="accel's rows only")
    timing.add_out(ap, "step_overhead.json and .png")
    ap.add_argument("--worker", choices=("calls", "accel", "accel_bn", "torch", "torch_bn"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind = args.worker
        if kind == "calls":
            res = calls_worker(args.steps)
        elif kind.startswith("accel"):
            res = accel_step_worker(kind.endswith("_bn"), args.steps)
        else:
            res = torch_step_worker(kind.endswith("_bn"), args.steps)
        timing.reply(res)
        return 0
    kinds = ["calls", "accel", "accel_bn"] + ([] if args.no_torch else ["torch", "torch_bn"])
    rounds = {k: [] for k in kinds}
    load_before = timing.check_load()
    for r in range(args.rounds):
        for kind in kinds:
            rounds[kind].append(run_worker(kind, args.steps))
        line = ", ".join(f"{k} {rounds[k][-1]['step_us']:.1f} µs" for k in kinds
                         if k != "calls")
        print(f"round {r + 1}/{args.rounds}: {line}", flush=True)
    calls = rounds["calls"]
    summary = {f"{op}_{how}": spread([c[f"{op}_{how}"] for c in calls])
               for op in ("adam", "bn") for how in ("kernel", "site", "call")}
    summary["adam_update"] = spread([c["adam_update"] for c in calls])
    for op in ("adam", "bn"):
        summary[f"{op}_site_over_kernel"] = spread([c[f"{op}_site"] - c[f"{op}_kernel"]
                                                   for c in calls])
    summary["accel_step"] = spread([a["step_us"] for a in rounds["accel"]])
    summary["accel_bn_step"] = spread([a["step_us"] for a in rounds["accel_bn"]])
    if not args.no_torch:
        summary["torch_step"] = spread([t["step_us"] for t in rounds["torch"]])
        summary["torch_bn_step"] = spread([t["step_us"] for t in rounds["torch_bn"]])
        for bn in ("", "_bn"):
            summary[f"accel_over_torch{bn}"] = spread(
                [a["step_us"] / t["step_us"] for a, t in zip(rounds[f"accel{bn}"],
                                                             rounds[f"torch{bn}"])])
    print(f"\n{args.rounds} rounds, {args.steps} calls each, one thread; median (min–max):")
    for op, label in (("adam", "Adam 1000"), ("bn", "BN forward 4x8")):
        print(f"  {label}: kernel {fmt(summary[f'{op}_kernel'])}, Site "
              f"{fmt(summary[f'{op}_site'])} (+{fmt(summary[f'{op}_site_over_kernel'])}), "
              f"dispatch.call {fmt(summary[f'{op}_call'])}")
    print(f"  Adam.update (a dict of one array): {fmt(summary['adam_update'])}")
    print(f"  step 8-8x4-2 batch {BATCH}: accel {fmt(summary['accel_step'])}"
          + ("" if args.no_torch else f", torch {fmt(summary['torch_step'])}, accel/torch "
             f"{fmt(summary['accel_over_torch'], '×', 3)}"))
    print(f"  with BatchNorm:         accel {fmt(summary['accel_bn_step'])}"
          + ("" if args.no_torch else f", torch {fmt(summary['torch_bn_step'])}, accel/torch "
             f"{fmt(summary['accel_over_torch_bn'], '×', 3)}"))
    meta = timing.machine(load_before, rounds=args.rounds, steps=args.steps, sizes=SIZES,
                          batch=BATCH, threads=1,
                          torch=None if args.no_torch else rounds["torch"][0]["torch"],
                          path=calls[0]["path"])
    path = timing.write_json(args.out, "step_overhead", dict(meta=meta, summary=summary,
                                                             rounds=rounds))
    try:
        plot(summary, path.with_suffix(".png"))
    except ImportError:
        print("no matplotlib: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
