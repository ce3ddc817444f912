"""Overfitting and its two remedies, weight decay and dropout (the book's figures 6-20 to
6-23).

300 training samples, a 784-100×6-10 ReLU net, SGD lr 0.01, batch 100, 201 epochs: the
baseline, weight decay λ = 0.1 (½λΣW² added to the loss), dropout 0.15 (inverted, accel's
default), and both; training and test accuracy per epoch and the final train–test gap.
Expected: the baseline reaches ~100 % training accuracy with a wide gap; weight decay and
dropout shrink the gap.

    python benchmarks/overfitting.py [--dataset mnist] [--epochs 201]
"""

from __future__ import annotations

import common

from accel import optim

DEFAULTS = {"train_samples": 300, "test_samples": 10000, "hidden": [100] * 6, "lr": 0.01,
            "batch_size": 100, "epochs": 201,
            "variants": {"baseline": {"weight_decay": 0.0, "dropout": 0.0},
                         "weight decay 0.1": {"weight_decay": 0.1, "dropout": 0.0},
                         "dropout 0.15": {"weight_decay": 0.0, "dropout": 0.15},
                         "weight decay + dropout": {"weight_decay": 0.1, "dropout": 0.15}},
            "gap_window": 10}
QUICK = {"epochs": 8, "test_samples": 1000}


def main(argv=None):
    p = common.parser("overfitting", __doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="(201)")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["epochs"])
    (x, t), (xt, tt) = common.load_data(args)
    x, t = common.subset(x, t, cfg["train_samples"])
    xt, tt = common.subset(xt, tt, cfg["test_samples"])
    k = common.n_classes(t, tt)

    results = {}
    steps = common.Steps(len(cfg["variants"]), "variants")
    for label, kw in cfg["variants"].items():
        net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed, **kw)
        h = common.train(net, optim.SGD(cfg["lr"]), ((x, t), (xt, tt)), epochs=cfg["epochs"],
                         batch_size=cfg["batch_size"], seed=args.seed)
        w = min(cfg["gap_window"], len(h.train_acc))
        gaps = [a - b for a, b in zip(h.train_acc[-w:], h.test_acc[-w:])]
        final = {"train_acc": h.train_acc[-1], "test_acc": h.test_acc[-1],
                 "gap": h.train_acc[-1] - h.test_acc[-1],
                 f"gap_mean_last{w}": sum(gaps) / w}
        results[label] = {**kw, "epoch": h.epoch, "train_acc": h.train_acc,
                          "test_acc": h.test_acc, "train_loss": common.rounded(h.train_loss),
                          "final": final}
        steps.done(label, train_acc=final["train_acc"], test_acc=final["test_acc"],
                   gap=final["gap"])

    plt = common.pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), sharey=True, squeeze=False)
    for ax, (label, r) in zip(axes[0], results.items()):
        ax.plot(r["epoch"], r["train_acc"], color="tab:blue", label="train")
        ax.plot(r["epoch"], r["test_acc"], color="tab:red", label="test")
        ax.set_title(f"{label}\ngap {r['final']['gap']:.3f} "
                     f"(train {r['final']['train_acc']:.3f}, test {r['final']['test_acc']:.3f})",
                     fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(f"{args.dataset}: {cfg['train_samples']} training samples, "
                 f"{common.architecture(x.shape[1], cfg['hidden'], k)}, SGD lr {cfg['lr']}")
    fig.tight_layout()

    summary = {f"{s}: train / test / gap":
               f"{r['final']['train_acc']:.3f} / {r['final']['test_acc']:.3f} / "
               f"{r['final']['gap']:.3f}" for s, r in results.items()}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    main()
