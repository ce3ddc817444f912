"""Gradient check of the whole network (the book's §5.7, the course's week-1 assignment).

A MultiLayerNet with BatchNorm and weight decay, in float64, compares its backpropagated
gradient with the two-sided numerical gradient (J(θ + h) − J(θ − h)) / 2h over the whole
flat parameter vector θ; per parameter and over θ the relative difference
‖g − g_num‖ / (‖g‖ + ‖g_num‖) and the course's verdict (< 1e-7 fine, > 1e-3 a bug).
The input is a few real samples of the dataset (or generated points).

    python benchmarks/gradient_check.py [--dataset mnist] [--samples 3]
"""

from __future__ import annotations

import common
import numpy as np

from accel import gradcheck, to_numpy

DEFAULTS = {"samples": 3, "hidden": [10, 10], "batchnorm": True, "weight_decay": 0.1,
            "activation": "relu", "weight_init": "he", "h": 1e-5, "input_features": 784}
QUICK = {"hidden": [6, 5], "input_features": 196}


def main(argv=None):
    p = common.parser("gradient_check", __doc__)
    common.option(p, "--samples", DEFAULTS, QUICK, "training samples the loss is taken over")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["samples"])
    (x, t), _ = common.load_data(args, dtype=np.float64)
    x, t = x[:cfg["samples"]], t[:cfg["samples"]]
    if x.shape[1] > cfg["input_features"]:  # quick: every 4th pixel keeps the check cheap
        x = np.ascontiguousarray(x[:, ::x.shape[1] // cfg["input_features"]])
    k = 10 if args.dataset in common.IMAGE_DATASETS else common.n_classes(t)
    net = common.make_net(run, x.shape[1], k, cfg["hidden"], seed=args.seed,
                          dtype=np.float64, batchnorm=cfg["batchnorm"],
                          weight_decay=cfg["weight_decay"], activation=cfg["activation"],
                          weight_init=cfg["weight_init"])
    n_params = int(net.params.flat.size)
    print(f"  {net}\n  {n_params} parameters, {2 * n_params} loss evaluations")
    # the numerical pass sees the same BatchNorm behaviour as the analytic one (train mode)
    res = gradcheck.check_network(net, x, t, h=cfg["h"])
    print("  " + res.report().replace("\n", "\n  "))

    grads = {k_: to_numpy(v).ravel() for k_, v in net.gradient(x, t).items()}
    results = {}
    for name, d in res.per_param.items():
        results[name] = {"size": int(grads[name].size),
                         "grad_norm": float(np.linalg.norm(grads[name])),
                         "final": {"relative_difference": d, "verdict": gradcheck.verdict(d)}}
    results["theta"] = {"size": n_params, "final": {"relative_difference": res.difference,
                                                    "verdict": res.verdict}}

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(res.per_param)
    vals = [max(res.per_param[n], 1e-18) for n in names] + [max(res.difference, 1e-18)]
    labels = names + ["θ (all)"]
    colors = ["tab:blue"] * len(names) + ["tab:green"]
    ax.bar(range(len(vals)), vals, color=colors, label="relative difference")
    ax.set_yscale("log")
    ax.axhline(1e-7, color="tab:green", ls="--", lw=1, label="1e-7: fine below")
    ax.axhline(1e-3, color="tab:red", ls="--", lw=1, label="1e-3: a bug above")
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, rotation=45)
    ax.set_xlabel("parameter")
    ax.set_ylabel("‖g − g_num‖ / (‖g‖ + ‖g_num‖)")
    ax.set_title(f"gradient check, float64, BatchNorm + weight decay {cfg['weight_decay']}: "
                 f"{res.verdict}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    summary = {"relative difference over θ": f"{res.difference:.3e}",
               "worst parameter": max(res.per_param, key=res.per_param.get),
               "verdict": res.verdict}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
