"""Compare optimizers on MNIST (the book's figure 6-9): the main job of the suite.

A 784-100-100-100-100-10 ReLU net with He initialization is trained for 2000 iterations
with mini-batches of 128 by SGD (lr 0.01), Momentum (0.01), AdaGrad (0.01), RMSProp (0.01)
and Adam (0.001), every optimizer on the same mini-batches from the same initial weights;
the smoothed training loss per iteration is plotted and the final test accuracy recorded.

    python benchmarks/compare_optimizers.py [--dataset mnist] [--iterations 2000]
"""

from __future__ import annotations

import math

import common

from accel import optim

DEFAULTS = {
    "hidden": [100, 100, 100, 100],
    "activation": "relu",
    "weight_init": "he",
    "batch_size": 128,
    "iterations": 2000,
    "optimizers": {
        "SGD": ("SGD", {"lr": 0.01}),
        "Momentum": ("Momentum", {"lr": 0.01, "momentum": 0.9}),
        "AdaGrad": ("AdaGrad", {"lr": 0.01}),
        "RMSProp": ("RMSProp", {"lr": 0.01, "decay_rate": 0.99}),
        "Adam": ("Adam", {"lr": 0.001}),
    },
    "evaluate_sample": 10000,
    "train_samples": None,  # all
}
QUICK = {"iterations": 150, "train_samples": 5000, "evaluate_sample": 1000}


def main(argv=None):
    p = common.parser("compare_optimizers", __doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=None, help="steps per optimizer (2000)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="(128)")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["iterations", "batch_size"])
    (x, t), (xt, tt) = common.load_data(args)
    if cfg["train_samples"]:
        x, t = common.subset(x, t, cfg["train_samples"])
    k = common.n_classes(t, tt)
    print(f"  train {x.shape}, test {xt.shape}, {cfg['iterations']} iterations per optimizer")

    results = {}
    steps = common.Steps(len(cfg["optimizers"]), "optimizers")
    for label, (cls, kw) in cfg["optimizers"].items():
        net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed,
                              activation=cfg["activation"], weight_init=cfg["weight_init"])
        h = common.train(net, getattr(optim, cls)(**kw), ((x, t), (xt, tt)),
                         iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                         seed=args.seed, evaluate_sample=cfg["evaluate_sample"])
        results[label] = common.loss_curve_result(h, lr=kw["lr"])
        final = results[label]["final"]
        steps.done(label, loss=final["loss_smoothed"], test_acc=final["test_acc"])

    fig = common.loss_figure(
        results, f"{args.dataset}: {common.architecture(x.shape[1], cfg['hidden'], k)} "
                 f"{cfg['activation']}, {cfg['weight_init']} init, batch {cfg['batch_size']}",
        ylim=(0, 1.2 * math.log(k)))
    for line, (label, r) in zip(fig.axes[0].get_legend().get_texts(), results.items()):
        line.set_text(f"{label} (lr {r['lr']:g}): test acc {r['final']['test_acc']:.3f}")
    order = sorted(results, key=lambda s: results[s]["final"]["loss_last100_mean"])
    summary = {"ranking (lowest loss first)": " < ".join(order),
               **{f"{s} loss / test acc": f"{results[s]['final']['loss_last100_mean']:.3f} / "
                                          f"{results[s]['final']['test_acc']:.3f}"
                  for s in results}}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    main()
