"""Overfitting and its two remedies, weight decay and dropout (the book's figures 6-20 to
6-23).

300 training samples, a 784-100×6-10 ReLU net, SGD lr 0.01, batch 100, 201 epochs: the
baseline, weight decay λ = 0.1 (½λΣW² added to the loss), dropout 0.15 (inverted, accel's
default), and both; training and test accuracy per epoch and the final train–test gap.
Expected: the baseline reaches ~100 % training accuracy with a wide gap; weight decay and
dropout shrink the gap. A fifth run is the course's third remedy, early stopping: the
baseline with ``accel.EarlyStopping`` watching the accuracy on 100 validation samples (the
next 100 of the training set, never trained on), stopping after 30 epochs without a better
one and restoring the best epoch's parameters; its final numbers are the restored net's.

    python benchmarks/overfitting.py [--dataset mnist] [--epochs 201]
"""

from __future__ import annotations

import common

import accel
from accel import optim

DEFAULTS = {"train_samples": 300, "test_samples": 10000, "hidden": [100] * 6, "lr": 0.01,
            "batch_size": 100, "epochs": 201,
            "variants": {"baseline": {"weight_decay": 0.0, "dropout": 0.0},
                         "weight decay 0.1": {"weight_decay": 0.1, "dropout": 0.0},
                         "dropout 0.15": {"weight_decay": 0.0, "dropout": 0.15},
                         "weight decay + dropout": {"weight_decay": 0.1, "dropout": 0.15}},
            "early_stopping": {"val_samples": 100, "patience": 30},
            "gap_window": 10}
QUICK = {"epochs": 8, "test_samples": 1000,
         "early_stopping": {"val_samples": 100, "patience": 2}}


def main(argv=None):
    p = common.parser("overfitting", __doc__)
    common.option(p, "--epochs", DEFAULTS, QUICK, "epochs per variant")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["epochs"])
    (x, t), (xt, tt) = common.load_data(args)
    es_cfg = cfg["early_stopping"]
    n = cfg["train_samples"]
    xv, tv = x[n:n + es_cfg["val_samples"]], t[n:n + es_cfg["val_samples"]]
    x, t = common.subset(x, t, n)
    xt, tt = common.subset(xt, tt, cfg["test_samples"])
    k = common.n_classes(t, tt)

    results = {}
    es_label = f"early stopping (patience {es_cfg['patience']})"
    variants = {**cfg["variants"], es_label: {"weight_decay": 0.0, "dropout": 0.0}}
    steps = common.Steps(len(variants), "variants")
    for label, kw in variants.items():
        net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed, **kw)
        stop = accel.EarlyStopping(metric="val_acc", patience=es_cfg["patience"]) \
            if label == es_label else None
        h = common.train(net, optim.SGD(cfg["lr"]), ((x, t), (xt, tt)), epochs=cfg["epochs"],
                         batch_size=cfg["batch_size"], seed=args.seed, label=label,
                         **({"validation_data": (xv, tv), "on_evaluate": [stop]} if stop
                            else {}))
        w = min(cfg["gap_window"], len(h.train_acc))
        gaps = [a - b for a, b in zip(h.train_acc[-w:], h.test_acc[-w:])]
        final = {"train_acc": h.train_acc[-1], "test_acc": h.test_acc[-1],
                 "gap": h.train_acc[-1] - h.test_acc[-1],
                 f"gap_mean_last{w}": sum(gaps) / w}
        extra = {}
        if stop is not None:  # the restored net's numbers are the result
            final = {"train_acc": net.accuracy(x, t), "test_acc": net.accuracy(xt, tt),
                     "best_epoch": stop.best_epoch, "best_val_acc": stop.best,
                     "stopped_epoch": h.stopped_epoch}
            final["gap"] = final["train_acc"] - final["test_acc"]
            extra = {"val_acc": h.val_acc, "stop_reason": h.stop_reason}
        results[label] = {**kw, "epoch": h.epoch, "train_acc": h.train_acc,
                          "test_acc": h.test_acc, "train_loss": common.rounded(h.train_loss),
                          **extra, "final": final}
        steps.done(label, train_acc=final["train_acc"], test_acc=final["test_acc"],
                   gap=final["gap"])

    plt = common.pyplot()
    n = len(results)
    cols = 3
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), sharey=True,
                             squeeze=False)
    for ax, (label, r) in zip(axes.flat, results.items()):
        ax.plot(r["epoch"], r["train_acc"], color="tab:blue", label="train")
        ax.plot(r["epoch"], r["test_acc"], color="tab:red", label="test")
        f = r["final"]
        title = f"{label}\ngap {f['gap']:.3f} (train {f['train_acc']:.3f}, test " \
                f"{f['test_acc']:.3f})"
        if "val_acc" in r:
            ax.plot(r["epoch"], r["val_acc"], color="tab:green", lw=0.8, alpha=0.8,
                    label="validation (watched)")
            ax.axvline(f["best_epoch"], color="0.3", ls="--", lw=1,
                       label=f"best: epoch {f['best_epoch']:g} (restored)")
            ax.set_xlim(0, cfg["epochs"])
            title += ("\nstopped at epoch " + f"{f['stopped_epoch']:g}"
                      if f["stopped_epoch"] is not None else "\nnot stopped")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for row in axes:
        row[0].set_ylabel("accuracy")
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"{args.dataset}: {cfg['train_samples']} training samples, "
                 f"{common.architecture(x.shape[1], cfg['hidden'], k)}, SGD lr {cfg['lr']}")
    fig.tight_layout()

    summary = {f"{s}: train / test / gap":
               f"{r['final']['train_acc']:.3f} / {r['final']['test_acc']:.3f} / "
               f"{r['final']['gap']:.3f}" for s, r in results.items()}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
