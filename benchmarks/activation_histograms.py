"""Activation distributions of the hidden layers under different initial scales (the book's
figures 6-10 to 6-14; the course's vanishing/exploding activations).

A 1000×100 standard-normal input goes through 5 fully connected layers of 100 units (no
bias) with sigmoid, tanh or ReLU, the weights drawn with std 1, 0.01, Xavier √(1/n) or
He √(2/n). Histograms of every layer's activations; per layer the mean, std and the
fraction saturated (sigmoid < 0.01 or > 0.99, tanh |a| > 0.99, ReLU exactly 0).
ReLU histograms are of log10 of the nonzero activations, so that the layer-by-layer
shrinking (std 0.01) and growth (std 1) of the scale both show.

    python benchmarks/activation_histograms.py [--samples 1000] [--units 100]
"""

from __future__ import annotations

import math

import common
import numpy as np

from accel import to_numpy

DEFAULTS = {"samples": 1000, "units": 100, "layers": 5, "bins": 30,
            "activations": ["sigmoid", "tanh", "relu"],
            "inits": ["std=1", "std=0.01", "Xavier", "He"]}
QUICK = {}  # the full experiment takes well under a second

RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def activate(xp, name, a):
    if name == "sigmoid":
        return 1 / (1 + xp.exp(-a))
    if name == "tanh":
        return xp.tanh(a)
    return xp.maximum(a, 0)


def std_of(init, n):
    return {"std=1": 1.0, "std=0.01": 0.01, "Xavier": math.sqrt(1 / n),
            "He": math.sqrt(2 / n)}[init]


def saturated(name, a):
    if name == "sigmoid":
        return float(np.mean((a < 0.01) | (a > 0.99)))
    if name == "tanh":
        return float(np.mean(np.abs(a) > 0.99))
    return float(np.mean(a == 0))


def main(argv=None):
    p = common.parser("activation_histograms", __doc__, datasets_allowed=None)
    common.option(p, "--samples", DEFAULTS, QUICK, "input samples (standard normal)")
    common.option(p, "--units", DEFAULTS, QUICK, "units per hidden layer")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["samples", "units"])
    xp, n, L = run.backend.xp, cfg["units"], cfg["layers"]

    results = {}
    for act in cfg["activations"]:
        for init in cfg["inits"]:
            rng = run.backend.rng(args.seed)  # same input and weights (up to scale) for all
            x = rng.standard_normal((cfg["samples"], n), dtype=xp.float64)
            acts = []
            for _ in range(L):
                w = rng.standard_normal((n, n), dtype=xp.float64) * std_of(init, n)
                x = activate(xp, act, x @ w)
                acts.append(to_numpy(x).ravel())
            if act in RANGES:
                lo, hi = RANGES[act]
                values = acts
            else:  # ReLU: log10 of the nonzero part, so vanishing and exploding both show
                values = [np.log10(a[a > 0]) for a in acts]
                allv = np.concatenate(values)
                lo, hi = (np.quantile(allv, [0.001, 0.999]) if allv.size else (-1.0, 1.0))
                lo, hi = float(np.floor(lo)), float(np.ceil(hi))
            edges = np.linspace(lo, hi, cfg["bins"] + 1)
            counts = [np.histogram(v, bins=edges)[0].tolist() for v in values]
            layers = [{"mean": float(a.mean()), "std": float(a.std()),
                       "saturated": saturated(act, a)} for a in acts]
            results[f"{act} / {init}"] = {
                "activation": act, "init": init, "weight_std": std_of(init, n),
                "layers": layers, "hist_edges": common.rounded(edges),
                "hist_counts": counts,
                "final": {"layer1_std": layers[0]["std"], "last_std": layers[-1]["std"],
                          "last_mean": layers[-1]["mean"],
                          "last_saturated": layers[-1]["saturated"],
                          "std_ratio_last_first": layers[-1]["std"] / layers[0]["std"]
                          if layers[0]["std"] > 0 else float("nan")},
            }

    plt = common.pyplot()
    na, ni = len(cfg["activations"]), len(cfg["inits"])
    fig, axes = plt.subplots(na, ni, figsize=(4 * ni, 3.2 * na), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, L))
    for i, act in enumerate(cfg["activations"]):
        for j, init in enumerate(cfg["inits"]):
            r, ax = results[f"{act} / {init}"], axes[i][j]
            edges = np.asarray(r["hist_edges"])
            total = cfg["samples"] * n
            for k, c in enumerate(r["hist_counts"]):
                ax.stairs(np.asarray(c) / total, edges, color=colors[k], lw=1.3,
                          label=f"layer {k + 1}: std {r['layers'][k]['std']:.3g}")
            ax.set_title(f"{act}, {init}", fontsize=10)
            what = "log10(activation), zeros left out" if act == "relu" else "activation"
            ax.set_xlabel(what)
            ax.set_ylabel("fraction of units")
            ax.legend(fontsize=6.5, loc="upper center")
    fig.suptitle(f"activations of {L} layers × {n} units, {cfg['samples']} N(0, 1) inputs "
                 f"(ReLU: log scale; std 0.01 vanishes, std 1 explodes)")
    fig.tight_layout()

    summary = {f"{k}: last-layer std / saturated":
               f"{r['final']['last_std']:.3g} / {r['final']['last_saturated']:.2f}"
               for k, r in results.items()}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
