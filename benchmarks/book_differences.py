"""Where accel's conventions differ from the book's code, and by how much.

The numbers behind the README's conventions table, each measured on the book's own
experiment:

1. **Loss.** accel computes the exact log-softmax cross-entropy; the book −log(y + 1e-7),
   which caps one sample's loss at −log(1e-7) ≈ 16.1. Both are computed at every step of
   compare_optimizers' RMSProp run (784-100×4-10, lr 0.01, batch 128, 2000 iterations): the
   largest spike, and the median difference elsewhere.
2. **Recorded loss.** accel records each mini-batch's loss from the forward pass that gives
   the gradient, before the update (``Trainer(record_loss="before_update")``); the book's
   trainer evaluates the batch again after the update (``record_loss="after_update"``). Both
   runs of compare_optimizers: the mean of the last 100 losses and the ranking each way.
3. **BatchNorm's running variance** starts at 1 in accel (PyTorch) and at 0 in the book
   (``bn_running_var_init=0.0``); batchnorm_compare's net (1000 samples, 784-100×5-10,
   SGD 0.01, batch 100, weight std 0.1, ε 1e-6): the training accuracy per epoch, measured
   in eval mode through the running statistics, as the book measures it.
4. **Nesterov.** The book's code before its 2021 fix used the updated v in the μ² term;
   since the fix it uses the previous v (= torch's SGD(nesterov=True), and accel). Both on
   f(x, y) = x²/20 + y² from (−7, 2), 30 steps at lr 0.1, μ 0.9.

    python benchmarks/book_differences.py [--dataset mnist] [--quick]
"""

from __future__ import annotations

import math

import common
import numpy as np

from accel import optim, to_numpy

OPTIMIZERS = {"SGD": ("SGD", {"lr": 0.01}), "Momentum": ("Momentum", {"lr": 0.01}),
              "AdaGrad": ("AdaGrad", {"lr": 0.01}), "RMSProp": ("RMSProp", {"lr": 0.01}),
              "Adam": ("Adam", {"lr": 0.001})}
DEFAULTS = {"hidden": [100] * 4, "batch_size": 128, "iterations": 2000,
            "optimizers": OPTIMIZERS, "bn_samples": 1000, "bn_hidden": [100] * 5,
            "bn_epochs": 20, "bn_weight_std": 0.1, "bn_eps": 1e-6, "train_samples": None,
            "book_eps": 1e-7}
QUICK = {"iterations": 150, "train_samples": 5000, "bn_samples": 300, "bn_epochs": 3}


def main(argv=None):
    p = common.parser("book_differences", __doc__)
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK)
    (x, t), (xt, tt) = common.load_data(args)
    k = common.n_classes(t, tt)
    data = common.subset(x, t, cfg["train_samples"]) if cfg["train_samples"] else (x, t)

    results = {"loss_form": loss_form(run, args, cfg, data, k),
               "recorded_loss": recorded_loss(run, args, cfg, data, k),
               "bn_running_var": bn_running_var(run, args, cfg, (x, t), k),
               "nesterov": nesterov_paths()}
    lf, rl = results["loss_form"]["final"], results["recorded_loss"]["final"]
    bn, ne = results["bn_running_var"]["final"], results["nesterov"]["final"]
    summary = {
        "RMSProp spike: exact / book's loss": f"{lf['max_exact']:.4g} / "
                                              f"{lf['book_at_max']:.4g}",
        "median |exact − book| per step": f"{lf['median_abs_diff']:.2g}",
        "ranking, loss before update": rl["ranking_before_update"],
        "ranking, loss after update (book)": rl["ranking_after_update"],
        "BN train acc epoch 1, var from 1 / 0": f"{bn['epoch1_init1']:.3f} / "
                                                 f"{bn['epoch1_init0']:.3f}",
        "BN largest acc difference, epoch": f"{bn['max_abs_diff']:.3f} at epoch "
                                            f"{bn['max_diff_epoch']}",
        "Nesterov end: fixed (accel) / before the fix": f"({ne['fixed'][0]:.4f}, "
            f"{ne['fixed'][1]:.4f}) / ({ne['pre_fix'][0]:.4f}, {ne['pre_fix'][1]:.4f})",
    }
    return common.finish(run, cfg, results, _figure(results, args.dataset), summary)


def _train(run, args, cfg, data, k, name, record_loss="before_update", hook=None):
    cls, kw = cfg["optimizers"][name]
    net = common.make_net(run, data[0].shape[1], k, cfg["hidden"], seed=args.seed)
    if hook is not None:
        hook(net)
    return common.train(net, getattr(optim, cls)(**kw), (data, None),
                        iterations=cfg["iterations"], batch_size=cfg["batch_size"],
                        seed=args.seed, evaluate_sample=1000, record_loss=record_loss,
                        label=f"{name} ({record_loss.replace('_', ' ')})")


def loss_form(run, args, cfg, data, k):
    """Both losses of every step of the RMSProp run, from the same softmax output."""
    book = []

    def hook(net):
        real = net.last_layer.forward

        def forward(scores, t, *args, **kwargs):  # the book's loss of the same scores
            z = np.asarray(to_numpy(scores), dtype=np.float64)
            z -= z.max(axis=1, keepdims=True)
            y = np.exp(z)
            y /= y.sum(axis=1, keepdims=True)
            picked = y[np.arange(len(y)), to_numpy(t)]
            book.append(float(-np.log(picked + cfg["book_eps"]).mean()))
            return real(scores, t, *args, **kwargs)

        net.last_layer.forward = forward

    h = _train(run, args, cfg, data, k, "RMSProp", hook=hook)
    exact, book = np.asarray(h.train_loss), np.asarray(book)
    i = int(exact.argmax())
    return {"exact": common.rounded(exact), "book": common.rounded(book),
            "final": {"max_exact": float(exact[i]), "book_at_max": float(book[i]),
                      "max_book": float(book.max()), "iteration_of_max": i + 1,
                      "median_abs_diff": float(np.median(np.abs(exact - book))),
                      "steps_exact_above_cap": int((exact > -math.log(cfg["book_eps"])).sum())}}


def recorded_loss(run, args, cfg, data, k):
    out, means = {}, {}
    for when in ("before_update", "after_update"):
        for name in cfg["optimizers"]:
            h = _train(run, args, cfg, data, k, name, record_loss=when)
            out[f"{name}/{when}"] = common.rounded(h.train_loss)
            means.setdefault(when, {})[name] = float(np.mean(h.train_loss[-100:]))
    ranking = {w: " < ".join(sorted(m, key=m.get)) for w, m in means.items()}
    return {**out, "last100_mean": means,
            "final": {f"ranking_{w}": r for w, r in ranking.items()}}


def bn_running_var(run, args, cfg, train, k):
    x, t = common.subset(*train, cfg["bn_samples"])
    acc = {}
    for init in (1.0, 0.0):
        net = common.make_net(run, x.shape[1], k, cfg["bn_hidden"], seed=args.seed,
                              weight_init=cfg["bn_weight_std"], batchnorm=True,
                              bn_eps=cfg["bn_eps"], bn_running_var_init=init)
        h = common.train(net, optim.SGD(0.01), ((x, t), None), epochs=cfg["bn_epochs"],
                         batch_size=100, seed=args.seed, label=f"running var from {init:g}")
        acc[init] = h.train_acc
    diff = np.abs(np.asarray(acc[1.0]) - np.asarray(acc[0.0]))
    return {"train_acc_init1": acc[1.0], "train_acc_init0": acc[0.0],
            "final": {"epoch1_init1": acc[1.0][1], "epoch1_init0": acc[0.0][1],
                      "max_abs_diff": float(diff.max()), "max_diff_epoch": int(diff.argmax()),
                      "last_init1": acc[1.0][-1], "last_init0": acc[0.0][-1]}}


def nesterov_paths(lr=0.1, mu=0.9, steps=30, start=(-7.0, 2.0)):
    def grad(p):
        return np.array([p[0] / 10.0, 2.0 * p[1]])

    fixed = {"p": np.array(start)}
    opt = optim.Nesterov(lr=lr, momentum=mu)
    pre, v = np.array(start), np.zeros(2)
    paths = {"fixed": [list(start)], "pre_fix": [list(start)]}
    for _ in range(steps):
        opt.update(fixed, {"p": grad(fixed["p"])})
        g = grad(pre)  # the book's code before 2021: v first, then the updated v in μ²·v
        v = mu * v - lr * g
        pre = pre + mu * mu * v - (1 + mu) * lr * g
        paths["fixed"].append(fixed["p"].tolist())
        paths["pre_fix"].append(pre.tolist())
    return {**paths, "final": {"fixed": paths["fixed"][-1], "pre_fix": paths["pre_fix"][-1]}}


def _figure(results, dataset):
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0, 0]
    lf = results["loss_form"]
    ax.plot(lf["exact"], lw=0.8, label="exact log-softmax (accel)")
    ax.plot(lf["book"], lw=0.8, label="−log(y + 1e-7) (the book)")
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="mini-batch loss", title="1. RMSProp run: the two losses")
    ax.legend()
    ax = axes[0, 1]
    means = results["recorded_loss"]["last100_mean"]
    names = list(means["before_update"])
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, [means["before_update"][n] for n in names], 0.4,
           label="before the update (accel)")
    ax.bar(pos + 0.2, [means["after_update"][n] for n in names], 0.4,
           label="after the update (the book)")
    ax.set_xticks(pos, names)
    ax.set(ylabel="mean of the last 100 losses", title="2. which loss is recorded")
    ax.legend()
    ax = axes[1, 0]
    bn = results["bn_running_var"]
    ax.plot(bn["train_acc_init1"], "o-", label="running var from 1 (accel, PyTorch)")
    ax.plot(bn["train_acc_init0"], "s--", label="running var from 0 (the book)")
    ax.set(xlabel="epoch", ylabel="training accuracy (eval mode)", ylim=(0, 1),
           title="3. BatchNorm's running variance at the start")
    ax.legend()
    ax = axes[1, 1]
    xs, ys = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 200))
    ax.contour(xs, ys, xs ** 2 / 20 + ys ** 2, levels=20, colors="0.8", linewidths=0.6)
    for key, label in (("fixed", "since the 2021 fix (accel, torch)"),
                       ("pre_fix", "before the fix")):
        p = np.asarray(results["nesterov"][key])
        ax.plot(p[:, 0], p[:, 1], "o-", ms=3, label=label)
    ax.set(xlabel="x", ylabel="y", title="4. Nesterov on x²/20 + y²")
    ax.legend()
    fig.suptitle(f"{dataset}: where accel and the book's code differ")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    common.cli(main)
