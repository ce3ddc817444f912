"""Optimizer paths on f(x, y) = x²/20 + y² from (−7, 2) (the book's figures 6-3 to 6-8).

Each optimizer takes 30 steps with the book's learning rates (SGD 0.95, Momentum 0.1,
AdaGrad 1.5, Adam 0.3; plus RMSProp and Nesterov); the paths are drawn on the contours and
the final positions go to the JSON. The function is elongated along x: SGD zig-zags across
the valley, the adaptive methods take nearly direct paths.

    python benchmarks/optimizer_paths.py [--steps 30] [--out DIR]
"""

from __future__ import annotations

import common
import numpy as np

from accel import optim

DEFAULTS = {
    "start": [-7.0, 2.0],
    "steps": 30,
    "optimizers": {  # label: (class name, kwargs); the book's forms (Adam folded, ε 1e-7)
        "SGD": ("SGD", {"lr": 0.95}),
        "Momentum": ("Momentum", {"lr": 0.1, "momentum": 0.9}),
        "Nesterov": ("Nesterov", {"lr": 0.1, "momentum": 0.9}),
        "AdaGrad": ("AdaGrad", {"lr": 1.5}),
        "RMSProp": ("RMSProp", {"lr": 0.15, "decay_rate": 0.99}),
        "Adam": ("Adam", {"lr": 0.3, "folded": True, "eps": 1e-7}),
    },
}
QUICK = {"steps": 30}  # already takes milliseconds


def f(x, y):
    return x ** 2 / 20.0 + y ** 2


def df(x, y):
    return x / 10.0, 2.0 * y


def path(opt, start, steps, xp):
    params = {"x": xp.asarray([start[0]], dtype=xp.float64),
              "y": xp.asarray([start[1]], dtype=xp.float64)}
    grads = {"x": xp.zeros(1), "y": xp.zeros(1)}
    xs, ys = [float(params["x"][0])], [float(params["y"][0])]
    for _ in range(steps):
        gx, gy = df(params["x"], params["y"])
        grads["x"][...] = gx
        grads["y"][...] = gy
        opt.update(params, grads)
        xs.append(float(params["x"][0]))
        ys.append(float(params["y"][0]))
    return xs, ys


def main(argv=None):
    p = common.parser("optimizer_paths", __doc__, datasets_allowed=None)
    common.option(p, "--steps", DEFAULTS, QUICK, "steps per optimizer")
    args = p.parse_args(argv)
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["steps"])
    xp = run.backend.xp

    results = {}
    for label, (cls, kw) in cfg["optimizers"].items():
        xs, ys = path(getattr(optim, cls)(**kw), cfg["start"], cfg["steps"], xp)
        xf, yf = xs[-1], ys[-1]
        results[label] = {"x": common.rounded(xs, 7), "y": common.rounded(ys, 7),
                          "final": {"x": xf, "y": yf, "f": f(xf, yf),
                                    "distance": float(np.hypot(xf, yf))}}

    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharex=True, sharey=True)
    gx, gy = np.meshgrid(np.arange(-10, 10, 0.05), np.arange(-5, 5, 0.05))
    for ax, (label, r) in zip(axes.flat, results.items()):
        ax.contour(gx, gy, f(gx, gy), levels=[0.25, 1, 2.5, 5, 10, 20, 30], colors="0.75",
                   linewidths=0.8)
        ax.plot(r["x"], r["y"], "o-", color="tab:red", ms=3, lw=1, label=f"{label} path")
        ax.plot(0, 0, "+", color="k", ms=12, mew=2, label="minimum (0, 0)")
        kw = cfg["optimizers"][label][1]
        fin = r["final"]
        ax.set_title(f"{label} (lr {kw['lr']}): end ({fin['x']:.2f}, {fin['y']:.2f})")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-5, 5)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{cfg['steps']} steps on f(x, y) = x²/20 + y² from {tuple(cfg['start'])}")
    fig.tight_layout()

    summary = {f"{k} end": f"({r['final']['x']:.3f}, {r['final']['y']:.3f})"
               for k, r in results.items()}
    return common.finish(run, cfg, results, fig, summary)


if __name__ == "__main__":
    common.cli(main)
