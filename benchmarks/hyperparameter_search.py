"""Random search for the learning rate and weight decay (the book's §6.5, figure 6-24).

500 training samples (shuffled), 20 % of them held out for validation, a 784-100×6-10
ReLU net, SGD, batch 100, 50 epochs per trial; lr = 10^U(−6, −2) and weight decay
λ = 10^U(−8, −4), 100 trials, every trial from the same initial weights on the same
mini-batches. Prints the ranking "Best-1 .. N" with each trial's lr and decay, plots the
validation (solid) and training (dashed) accuracy of the best 20, and the trials on the
(lr, λ) plane. ``--narrow K`` samples again inside the range the best K span (``--rounds``
times in all); ``--workers N`` runs the trials of a round in N processes (each on the
backend asked for). Expected (book): the good trials have lr ≈ 1e-3..1e-2 and
λ ≈ 1e-8..1e-6.

    python benchmarks/hyperparameter_search.py [--trials 100] [--narrow 10] [--workers 2]
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp

import common
import numpy as np

from accel import optim, search
from accel.preprocessing import train_val_split

DEFAULTS = {"samples": 500, "val_fraction": 0.2, "hidden": [100] * 6, "batch_size": 100,
            "epochs": 50, "trials": 100, "lr_log10": [-6, -2], "weight_decay_log10": [-8, -4],
            "narrow": None, "rounds": 1, "workers": 1, "show": 20}
QUICK = {"trials": 6, "epochs": 4, "show": 6}

_DATA = {}  # what the objective reads: set in this process, or by each worker's initializer


def _init(data, backend, hidden, batch_size, epochs, seed):
    _DATA.update(data=data, backend=backend, hidden=hidden, batch_size=batch_size,
                 epochs=epochs, seed=seed)


def objective(params):
    """Train one net with ``params`` (lr, weight_decay); score = final validation accuracy."""
    import accel

    d = _DATA
    (x, t), (xv, tv) = d["data"]
    k = int(max(t.max(), tv.max())) + 1
    net = accel.MultiLayerNet(x.shape[1], d["hidden"], k, weight_decay=params["weight_decay"],
                              backend=d["backend"], seed=d["seed"])
    h = accel.Trainer(net, optim.SGD(params["lr"]), x, t, validation_data=(xv, tv),
                      epochs=d["epochs"], batch_size=d["batch_size"], seed=d["seed"],
                      verbose=False, on_nonfinite=None).fit()
    return h.val_acc[-1], {"val_acc": h.val_acc, "train_acc": h.train_acc,
                           "final_train_acc": h.train_acc[-1]}


def main(argv=None):
    p = common.parser("hyperparameter_search", __doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="trials per round (100)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (50)")
    p.add_argument("--narrow", type=int, default=None, metavar="K",
                   help="after a round, sample again inside the range of the best K")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds in all (2 when --narrow is given, else 1)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (1)")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK,
                             ["trials", "epochs", "narrow", "rounds", "workers"])
    if cfg["narrow"] and args.rounds is None:
        cfg["rounds"] = 2
    if cfg["rounds"] > 1 and not cfg["narrow"]:
        p.error("--rounds > 1 needs --narrow K")

    (x, t), _ = common.load_data(args)
    x, t = common.subset(x, t, cfg["samples"], seed=args.seed)  # the book shuffles first
    data = train_val_split(x, t, cfg["val_fraction"], seed=args.seed)
    print(f"  train {data[0][0].shape}, validation {data[1][0].shape}; {cfg['trials']} "
          f"trials × {cfg['rounds']} round(s), {cfg['workers']} worker(s)")
    space = {"lr": search.LogUniform.exponents(*cfg["lr_log10"]),
             "weight_decay": search.LogUniform.exponents(*cfg["weight_decay_log10"])}
    init_args = (data, run.backend.name, cfg["hidden"], cfg["batch_size"], cfg["epochs"],
                 args.seed)

    steps = common.Steps(cfg["trials"] * cfg["rounds"], "trials")

    def report(tr):
        steps.done(f"round {tr.round} trial {tr.index}", val_acc=tr.score,
                   lr=tr.params["lr"], decay=tr.params["weight_decay"])

    kw = dict(seed=args.seed, rounds=cfg["rounds"], narrow_top=cfg["narrow"],
              callback=report)
    if cfg["workers"] > 1:
        # spawn, not fork: safe with thread pools and CUDA contexts already in this process
        with cf.ProcessPoolExecutor(cfg["workers"], mp_context=mp.get_context("spawn"),
                                    initializer=_init, initargs=init_args) as pool:
            result = search.random_search(objective, space, cfg["trials"], map=pool.map, **kw)
    else:
        _init(*init_args)
        result = search.random_search(objective, space, cfg["trials"], **kw)

    ranked = result.ranked()
    print("  ranking:")
    for i, tr in enumerate(ranked[:cfg["show"]]):
        print(f"    Best-{i + 1:<3d} (val acc: {tr.score:.3f}) | lr: {tr.params['lr']:.3g}, "
              f"weight decay: {tr.params['weight_decay']:.3g}")

    results = {}
    for i, tr in enumerate(ranked):  # curves for the best `show` (the plotted ones) only
        curves = ({"val_acc": tr.info["val_acc"], "train_acc": tr.info["train_acc"]}
                  if i < cfg["show"] else {})
        results[f"Best-{i + 1}"] = {
            "trial": tr.index, "round": tr.round, "lr": tr.params["lr"],
            "weight_decay": tr.params["weight_decay"], **curves,
            "final": {"val_acc": tr.score, "train_acc": tr.info["final_train_acc"]}}

    fig = _figure(ranked, cfg, result, args.dataset)
    top = ranked[:min(10, len(ranked))]
    lrs = [tr.params["lr"] for tr in top]
    wds = [tr.params["weight_decay"] for tr in top]
    summary = {"best val acc": round(ranked[0].score, 4),
               "best lr / weight decay": f"{ranked[0].params['lr']:.3g} / "
                                         f"{ranked[0].params['weight_decay']:.3g}",
               f"top-{len(top)} lr range": f"{min(lrs):.2g} .. {max(lrs):.2g}",
               f"top-{len(top)} weight decay range": f"{min(wds):.2g} .. {max(wds):.2g}"}
    return common.finish(run, cfg, results, fig, summary,
                         search={"spaces": result.to_dict()["spaces"],
                                 "ranking": [tr.index for tr in ranked]})


def _figure(ranked, cfg, result, dataset):
    plt = common.pyplot()
    show = ranked[:cfg["show"]]
    cols = 5
    rows = max(1, -(-len(show) // cols))
    fig = plt.figure(figsize=(3.0 * cols, 2.3 * rows + 4.2))
    gs = fig.add_gridspec(rows + 2, cols)
    for i, tr in enumerate(show):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        ep = np.arange(len(tr.info["val_acc"]))
        ax.plot(ep, tr.info["val_acc"], color="tab:blue", label="validation")
        ax.plot(ep, tr.info["train_acc"], color="tab:blue", ls="--", lw=0.9, label="train")
        ax.set_title(f"Best-{i + 1}: lr {tr.params['lr']:.1e}, λ {tr.params['weight_decay']:.0e}",
                     fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("accuracy", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("epoch", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(gs[rows:, :])
    for r in range(len(result.spaces)):
        tr = result.round(r)
        sc = ax.scatter([x.params["lr"] for x in tr], [x.params["weight_decay"] for x in tr],
                        c=[x.score for x in tr], cmap="viridis", vmin=0, vmax=1,
                        marker="o^sD"[r % 4], edgecolor="k", lw=0.3, s=30,
                        label=f"round {r + 1}" + (" (narrowed)" if r else ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay λ")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(sc, ax=ax, label="validation accuracy")
    fig.suptitle(f"{dataset}: random search, {cfg['samples']} samples, {cfg['epochs']} epochs "
                 f"per trial, best {len(show)} of {len(ranked)}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
