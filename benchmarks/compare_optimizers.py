"""Compare optimizers on MNIST (the book's figure 6-9): the main job of the suite.

A 784-100-100-100-100-10 ReLU net with He initialization is trained for 2000 iterations
with mini-batches of 128 by SGD (lr 0.01), Momentum (0.01), AdaGrad (0.01), RMSProp (0.01)
and Adam (0.001), every optimizer on the same mini-batches from the same initial weights;
the smoothed training loss per iteration is plotted and the final test accuracy recorded.

    python benchmarks/compare_optimizers.py [--dataset mnist] [--iterations 2000]
"""

from __future__ import annotations

import math
import sys

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
LOSS = "mean loss of the last 100 it."  # the one loss number printed and ranked


def main(argv=None):
    p = common.parser("compare_optimizers", __doc__)
    common.option(p, "--iterations", DEFAULTS, QUICK, "training steps per optimizer")
    common.option(p, "--batch-size", DEFAULTS, QUICK, "mini-batch size")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["iterations", "batch_size"])
    (x, t), (xt, tt) = common.load_data(args)
    if cfg["train_samples"]:
        x, t = common.subset(x, t, cfg["train_samples"])
    k = common.n_classes(t, tt)
    print(f"  train {x.shape}, test {xt.shape}, {cfg['iterations']} iterations per optimizer")

    results, interrupted = {}, None
    steps = common.Steps(len(cfg["optimizers"]), "optimizers")
    try:
        for label, (cls, kw) in cfg["optimizers"].items():
            net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed,
                                  activation=cfg["activation"], weight_init=cfg["weight_init"])
            h = common.train(net, getattr(optim, cls)(**kw), ((x, t), (xt, tt)),
                             iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                             seed=args.seed, evaluate_sample=cfg["evaluate_sample"],
                             label=label)
            results[label] = common.loss_curve_result(h, lr=kw["lr"])
            final = results[label]["final"]
            steps.done(label, **{LOSS: final["loss_last100_mean"],
                                 "test acc": final["test_acc"]})
    except KeyboardInterrupt:  # keep what finished: written below, then exit 130
        interrupted = next((o for o in cfg["optimizers"] if o not in results), "the plot")
    if not results:
        raise KeyboardInterrupt

    ylim = (0, 1.2 * math.log(k))
    for r in results.values():  # the plot cuts these: marked there, counted here
        r["final"]["losses_above_axis"] = int(common.above_axis(r["train_loss"], ylim[1]).size)
    fig = common.loss_figure(
        results, f"{args.dataset}: {common.architecture(x.shape[1], cfg['hidden'], k)} "
                 f"{cfg['activation']}, {cfg['weight_init']} init, batch {cfg['batch_size']}",
        ylim=ylim)
    ax = fig.axes[0]
    for line, (label, r) in zip(ax.get_legend().get_texts(), results.items()):
        line.set_text(f"{label} (lr {r['lr']:g}): test acc {r['final']['test_acc']:.3f}"
                      + common.above_axis_note(r["train_loss"], ylim[1]))
    note = same_accuracy_note([r["final"]["test_acc"] for r in results.values()],
                              args.dataset)
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
                fontsize=10, bbox=dict(boxstyle="round", fc="lightyellow", ec="0.6"))
    if interrupted:
        ax.set_title(ax.get_title() + f"\n(interrupted during {interrupted}: "
                     f"{len(results)} of {len(cfg['optimizers'])} optimizers)", fontsize=10)
    order = sorted(results, key=lambda s: results[s]["final"]["loss_last100_mean"])
    summary = {f"ranking ({LOSS}, lowest first)": " < ".join(order),
               **{f"{s} {LOSS} / test acc": f"{results[s]['final']['loss_last100_mean']:.3f} / "
                                           f"{results[s]['final']['test_acc']:.3f}"
                  for s in results}}
    if note:
        summary["note"] = " ".join(note.split())
    record = common.finish(run, cfg, results, fig, summary,
                           **({"interrupted": interrupted} if interrupted else {}))
    if interrupted:
        print(f"  interrupted during {interrupted}: the JSON and PNG hold the "
              f"{len(results)} optimizers that finished ({', '.join(results)})",
              file=sys.stderr)
        raise KeyboardInterrupt
    return record


def same_accuracy_note(accs, dataset, within: float = 0.01):
    """A note for the plot when every optimizer ends within ``within`` test accuracy of
    the others (the generated datasets at the book's settings), else None."""
    if len(accs) < 2 or max(accs) - min(accs) >= within:
        return None
    span = f"{min(accs):.3f}" + (f"–{max(accs):.3f}" if max(accs) > min(accs) else "")
    return (f"every optimizer reaches test accuracy {span} on {dataset}:\nthe problem is "
            "too easy to separate them by accuracy; the loss curves\nshow how fast each "
            "gets there")


if __name__ == "__main__":
    common.cli(main)
