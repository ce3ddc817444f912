"""Batch normalization against the initial weight scale (the book's figure 6-19).

1000 training samples, 784-100×5-10 ReLU, SGD lr 0.01, batch 100, 20 epochs, the weight
std over logspace(0, −4, 16): for every scale the net is trained with and without
BatchNorm from the same weights on identical mini-batches, and the training accuracy is
recorded per epoch (the book's measure; the test accuracy is measured once at the end).
BatchNorm uses the book's ε = 1e-6 (10e-7 in its code): at the smallest scales the batch
variances fall to ~1e-6, and a larger ε (accel's default 1e-5) damps them.
Expected: BatchNorm learns faster and learns at almost every scale.

    python benchmarks/batchnorm_compare.py [--dataset mnist] [--epochs 20] [--scales 16]
"""

from __future__ import annotations

import common
import numpy as np

from accel import optim

DEFAULTS = {"train_samples": 1000, "hidden": [100] * 5, "lr": 0.01, "batch_size": 100,
            "epochs": 20, "scales": 16, "scale_range_log10": [0, -4], "test_samples": 10000,
            "bn_eps": 1e-6}  # the book's 10e-7 (accel's default is 1e-5, PyTorch's)
QUICK = {"train_samples": 300, "epochs": 3, "scales": 4, "test_samples": 1000}


def main(argv=None):
    p = common.parser("batchnorm_compare", __doc__)
    common.option(p, "--epochs", DEFAULTS, QUICK, "epochs per run")
    common.option(p, "--scales", DEFAULTS, QUICK,
                  "weight stds, log-spaced from 1 to 1e-4 (each trained with and without "
                  "BatchNorm)")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["epochs", "scales"])
    (x, t), (xt, tt) = common.load_data(args)
    x, t = common.subset(x, t, cfg["train_samples"])
    xt, tt = common.subset(xt, tt, cfg["test_samples"])
    k = common.n_classes(t, tt)
    scales = np.logspace(*cfg["scale_range_log10"], num=cfg["scales"]).tolist()

    results = {}
    steps = common.Steps(2 * len(scales), "runs")
    for w in scales:
        for bn in (True, False):
            net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed,
                                  weight_init=w, batchnorm=bn, bn_eps=cfg["bn_eps"])
            label = f"std={w:.3g} / {'BatchNorm' if bn else 'no BatchNorm'}"
            # Without BatchNorm the largest scales start with huge logits (loss 1.5e5 at std
            # 1), the first SGD steps are as huge, and within a few steps the activations pass
            # float32's range: the loss turns NaN and the net stays at chance, as in the
            # book's figure. Counted and marked below instead of NumPy's bare warning.
            with np.errstate(over="ignore", invalid="ignore"):
                h = common.train(net, optim.SGD(cfg["lr"]), ((x, t), None),
                                 epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                                 seed=args.seed, label=label)
                test_acc = net.accuracy(xt, tt)
            overflowed = not np.isfinite(h.train_loss).all()
            results[label] = {"weight_std": w, "batchnorm": bn, "epoch": h.epoch,
                              "train_acc": h.train_acc,
                              "train_loss": common.rounded(h.train_loss),
                              "final": {"train_acc": h.train_acc[-1], "test_acc": test_acc,
                                        "best_train_acc": max(h.train_acc),
                                        "overflowed": overflowed}}
            steps.done(label, train_acc=h.train_acc[-1], test_acc=test_acc,
                       **({"note": "float32 overflow (loss NaN/inf)"} if overflowed else {}))

    plt = common.pyplot()
    n = len(scales)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True,
                             sharey=True, squeeze=False)
    for i, w in enumerate(scales):
        ax = axes.flat[i]
        rb = results[f"std={w:.3g} / BatchNorm"]
        rn = results[f"std={w:.3g} / no BatchNorm"]
        ax.plot(rb["epoch"], rb["train_acc"], color="tab:blue", lw=1.8, label="BatchNorm")
        ax.plot(rn["epoch"], rn["train_acc"], color="tab:orange", lw=1.5, ls="--",
                label="no BatchNorm")
        ax.set_title(f"W std = {w:.3g}" + (" (no BN: float32 overflow)"
                                           if rn["final"]["overflowed"] else ""), fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("training accuracy")
        if i >= n - cols:
            ax.set_xlabel("epoch")
        if i == 0:
            ax.legend(fontsize=8, loc="lower right")
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"{args.dataset}: {cfg['train_samples']} samples, "
                 f"{common.architecture(x.shape[1], cfg['hidden'], k)}, SGD lr {cfg['lr']}, "
                 f"batch {cfg['batch_size']}")
    fig.tight_layout()

    bn_acc = [results[f"std={w:.3g} / BatchNorm"]["final"]["train_acc"] for w in scales]
    no_acc = [results[f"std={w:.3g} / no BatchNorm"]["final"]["train_acc"] for w in scales]
    wins = sum(b >= a for b, a in zip(bn_acc, no_acc))
    over = [f"{w:.3g}" for w in scales
            if results[f"std={w:.3g} / no BatchNorm"]["final"]["overflowed"]]
    summary = {"mean final train acc, BatchNorm": round(float(np.mean(bn_acc)), 4),
               "mean final train acc, no BatchNorm": round(float(np.mean(no_acc)), 4),
               "scales where BatchNorm >= no BatchNorm": f"{wins}/{n}",
               "scales learning (train acc > 0.5), BatchNorm / none":
               f"{sum(a > 0.5 for a in bn_acc)}/{n} / {sum(a > 0.5 for a in no_acc)}/{n}",
               "no-BatchNorm runs that overflowed float32 (std)": ", ".join(over) or "none"}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
