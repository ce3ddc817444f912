"""Compare weight initializations on MNIST (the book's figure 6-15).

The net of compare_optimizers (784-100×4-10, ReLU) trained by SGD (lr 0.01, batch 128) for
2000 iterations from three initial scales: std 0.01, "Xavier" (√(1/n_in), the book's) and
He (√(2/n_in)); the same mini-batches for all. Expected: std 0.01 does not learn (the loss
stays at ln 10 ≈ 2.30), He learns faster than Xavier.

    python benchmarks/compare_initializers.py [--dataset mnist] [--iterations 2000]
"""

from __future__ import annotations

import math

import common

from accel import optim

DEFAULTS = {
    "hidden": [100, 100, 100, 100],
    "activation": "relu",
    "batch_size": 128,
    "iterations": 2000,
    "lr": 0.01,
    "inits": {"std=0.01": 0.01, "Xavier": "xavier", "He": "he"},
    "evaluate_sample": 10000,
    "train_samples": None,
}
QUICK = {"iterations": 300, "train_samples": 5000, "evaluate_sample": 1000}


def main(argv=None):
    p = common.parser("compare_initializers", __doc__)
    common.option(p, "--iterations", DEFAULTS, QUICK, "training steps per initializer")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["iterations"])
    (x, t), (xt, tt) = common.load_data(args)
    if cfg["train_samples"]:
        x, t = common.subset(x, t, cfg["train_samples"])
    k = common.n_classes(t, tt)

    results = {}
    steps = common.Steps(len(cfg["inits"]), "initializers")
    for label, init in cfg["inits"].items():
        net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed,
                              activation=cfg["activation"], weight_init=init)
        h = common.train(net, optim.SGD(cfg["lr"]), ((x, t), (xt, tt)),
                         iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                         seed=args.seed, evaluate_sample=cfg["evaluate_sample"], label=label)
        results[label] = common.loss_curve_result(h, weight_init=init)
        final = results[label]["final"]
        steps.done(label, **{"loss (last 100 it.)": final["loss_last100_mean"],
                             "test acc": final["test_acc"]})

    fig = common.loss_figure(results, f"{args.dataset}: weight init, SGD lr {cfg['lr']}, "
                                      f"{common.architecture(x.shape[1], cfg['hidden'], k)} "
                                      f"{cfg['activation']}",
                             ylim=(0, 1.2 * math.log(k)))
    ax = fig.axes[0]
    ax.axhline(math.log(k), color="0.5", ls=":", lw=1, label=f"ln {k} (chance)")
    ax.legend()
    summary = {f"{s} loss (last 100 it.) / test acc":
               f"{r['final']['loss_last100_mean']:.3f} / {r['final']['test_acc']:.3f}"
               for s, r in results.items()}
    summary["ln(classes)"] = round(math.log(k), 4)
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
