"""Learning-rate decay on the course's "moons" problem (DLS course 2, week 2).

300 points of two noisy moons (noise 0.2; 240 train, 60 test), the course's [2, 5, 2, 1]
ReLU net with He initialization ending in one sigmoid unit (``output="sigmoid"``, binary
cross-entropy), mini-batches of 64 (4 per epoch), 5000 epochs, trained by mini-batch
gradient descent, Momentum (β 0.9, the course's EMA form) and Adam: without decay at the
course's lr 0.0007, and with decay from the course's lr0 (0.1 for GD and Momentum, 0.01 for
Adam) by inverse-time decay lr0/(1 + epoch), fixed-interval (staircase) decay
lr0/(1 + ⌊epoch/1000⌋), exponential 0.95^epoch·lr0 and inverse-sqrt lr0/√epoch, each set
at the start of every epoch (``schedule_unit="epoch"``), and the lectures' per-mini-batch
form k/√t, lr0/√iteration set before every step (``schedule_unit="iteration"``). The
figure shows the decision boundaries with the accuracies, the cost per epoch and the
learning rates. Expected (course): without decay GD and Momentum reach ~72–80 % and Adam
~94 %; with the staircase decay all three reach ~94–96 %; per-epoch inverse-time decay
shrinks lr too fast.

    python benchmarks/lr_decay.py [--dataset moons] [--epochs 5000]
"""

from __future__ import annotations

import common
import numpy as np
from matplotlib.colors import ListedColormap

from accel import optim, schedules, to_numpy

DEFAULTS = {"n_samples": 300, "noise": 0.2, "hidden": [5, 2], "output": "sigmoid",
            "batch_size": 64,
            "epochs": 5000, "lr_no_decay": 0.0007,
            "lr0": {"GD": 0.1, "Momentum": 0.1, "Adam": 0.01},
            "decay_rate": 1.0, "time_interval": 1000, "exp_base": 0.95,
            "curve_every": 50}
QUICK = {"epochs": 80, "time_interval": 25, "curve_every": 5}

SCHEDULES = ("no decay", "inverse-time", "staircase", "exponential", "inverse-sqrt",
             "inverse-sqrt per iteration")
LR_FLOOR = 1e-6  # the lr panel's bottom: exponential decay falls far below it (0.95^5000)


def make_optimizer(name, lr):
    if name == "GD":
        return optim.SGD(lr)
    if name == "Momentum":
        return optim.Momentum(lr, momentum=0.9, dampening=0.9)
    return optim.Adam(lr, beta1=0.9, beta2=0.999, eps=1e-8)


def make_schedule(kind, lr0, cfg):
    if kind == "no decay":
        return schedules.Constant(cfg["lr_no_decay"])
    if kind == "inverse-time":
        return schedules.InverseTimeDecay(lr0, rate=cfg["decay_rate"])
    if kind == "staircase":
        return schedules.StaircaseDecay(lr0, rate=cfg["decay_rate"],
                                         interval=cfg["time_interval"])
    if kind == "exponential":
        return schedules.ExponentialDecay(lr0, base=cfg["exp_base"])
    return schedules.InverseSqrtDecay(lr0)  # per epoch, or per iteration (its unit)


def unit(kind) -> str:
    return "iteration" if kind.endswith("per iteration") else "epoch"


def main(argv=None):
    # two classes: the course's net ends in one sigmoid unit
    p = common.parser("lr_decay", __doc__, datasets_allowed=("moons", "circles"),
                      default_dataset="moons")
    common.option(p, "--epochs", DEFAULTS, QUICK, "epochs per run")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["epochs"])
    (x, t), (xt, tt) = common.load_data(args, n_samples=cfg["n_samples"], noise=cfg["noise"])
    every = cfg["curve_every"]

    results, nets, full = {}, {}, {}
    steps = common.Steps(len(cfg["lr0"]) * len(SCHEDULES), "runs")
    for opt_name, lr0 in cfg["lr0"].items():
        for kind in SCHEDULES:
            net = common.make_net(run, x.shape[1], 1, cfg["hidden"], seed=args.seed,
                                  weight_init="he", output=cfg["output"])
            sched = make_schedule(kind, lr0, cfg)
            label = f"{opt_name} / {kind}"
            h = common.train(net, make_optimizer(opt_name, sched(0)), ((x, t), (xt, tt)),
                             epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                             seed=args.seed, schedule=sched, schedule_unit=unit(kind),
                             label=label)
            per_epoch = np.asarray(h.train_loss).reshape(cfg["epochs"], -1).mean(axis=1)
            results[label] = {
                "optimizer": opt_name, "schedule": repr(sched), "schedule_unit": unit(kind),
                "curve_every": every,
                "epoch": list(range(0, cfg["epochs"], every)),
                "cost": common.rounded(per_epoch[::every]),
                "lr": common.rounded(h.lr[1::every]),
                "train_acc": h.train_acc[::every], "test_acc": h.test_acc[::every],
                "final": {"train_acc": h.train_acc[-1], "test_acc": h.test_acc[-1],
                          "cost": float(per_epoch[-1]), "lr": h.lr[-1]}}
            nets[label] = net
            full[label] = per_epoch
            steps.done(label, train_acc=h.train_acc[-1], test_acc=h.test_acc[-1],
                       lr_end=h.lr[-1])

    fig = _figure(results, nets, full, cfg, (x, t), args.dataset)
    summary = {f"{s}: train / test acc": f"{r['final']['train_acc']:.3f} / "
                                         f"{r['final']['test_acc']:.3f}"
               for s, r in results.items()}
    return common.finish(run, cfg, results, fig, summary)


def _figure(results, nets, full, cfg, train, dataset):
    plt = common.pyplot()
    opts = list(cfg["lr0"])
    n_s = len(SCHEDULES)
    fig, axes = plt.subplots(len(opts) + 1, n_s, figsize=(3.3 * n_s, 3.1 * (len(opts) + 1)))
    x, t = train
    k = int(t.max()) + 1
    cmap = ListedColormap([f"C{c}" for c in range(k)])
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(x.dtype)
    for i, o in enumerate(opts):
        for j, s in enumerate(SCHEDULES):
            ax, label = axes[i][j], f"{o} / {s}"
            z = (to_numpy(nets[label].predict(grid))[:, 0] > 0).reshape(gx.shape)  # σ > ½
            ax.contourf(gx, gy, z, levels=np.arange(k + 1) - 0.5, cmap=cmap, alpha=0.25)
            for c, m in zip(range(k), "o^sv"):
                sel = t == c
                ax.scatter(x[sel, 0], x[sel, 1], s=6, marker=m, color=f"C{c}",
                           label=f"class {c}")
            f = results[label]["final"]
            ax.set_title(f"{label}\ntrain {f['train_acc']:.3f}, test {f['test_acc']:.3f}",
                         fontsize=9)
            ax.set_xlabel("x1", fontsize=8)
            ax.set_ylabel("x2", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower left")
    last = axes[-1]
    for i, o in enumerate(opts):
        ax = last[i]
        for j, s in enumerate(SCHEDULES):
            cost = full[f"{o} / {s}"]
            ax.plot(np.arange(len(cost)), cost, color=f"C{j}", lw=1.0, label=s)
        ax.set_yscale("log")
        ax.set_title(f"{o}: cost per epoch", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("binary cross-entropy", fontsize=8)
        ax.legend(fontsize=7)
    ax = last[len(opts)]
    o = opts[0]
    below = []
    for j, s in enumerate(SCHEDULES):
        r = results[f"{o} / {s}"]
        ax.plot(r["epoch"], r["lr"], color=f"C{j}", lw=1.2, label=s)
        lowest = min([*r["lr"], r["final"]["lr"]])
        if lowest < LR_FLOOR:
            below.append(f"{s} reaches {lowest:.0e}")
    ax.set_yscale("log")
    ax.set_ylim(LR_FLOOR, 2 * max(cfg["lr0"][o], cfg["lr_no_decay"]))
    ax.set_title(f"learning rate ({o}: lr0 {cfg['lr0'][o]}, no decay {cfg['lr_no_decay']})"
                 + ("\n" + "; ".join(below) + ", below the axis" if below else ""),
                 fontsize=8)
    ax.set_xlabel("epoch (per-iteration lr: its value at the epoch's end)", fontsize=7)
    ax.set_ylabel("lr", fontsize=8)
    ax.legend(fontsize=6)
    for ax in last[len(opts) + 1:]:
        ax.axis("off")
    fig.suptitle(f"{dataset}: [2, {', '.join(map(str, cfg['hidden']))}, 1] ReLU → sigmoid, "
                 f"batch {cfg['batch_size']}, {cfg['epochs']} epochs")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    common.cli(main)
