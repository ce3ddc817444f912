"""Run every experiment of the suite into one folder, with an index page.

Each experiment writes its <name>.png and <name>.json into --out; this script adds
index.md (every figure beside its key numbers and the command that made it), run_all.json
(the summaries and times) and run_all.png (a contact sheet of the figures). An experiment
that fails is reported and the others still run (exit status 1 at the end).

    python benchmarks/run_all.py --dataset fashion-mnist --out benchmarks/results
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path

import common

EXPERIMENTS = ("optimizer_paths", "activation_histograms", "gradient_check",
               "compare_initializers", "compare_optimizers", "batchnorm_compare",
               "overfitting", "lr_decay", "hyperparameter_search")
NO_DATASET = ("optimizer_paths", "activation_histograms")  # synthetic input
GENERATED_ONLY = ("lr_decay",)  # the course's moons, whatever --dataset is

TITLES = {
    "optimizer_paths": "Optimizer paths on x²/20 + y²",
    "activation_histograms": "Activation histograms vs. initial weight scale",
    "gradient_check": "Gradient check (BatchNorm + weight decay, float64)",
    "compare_initializers": "Weight initialization: std 0.01, Xavier, He",
    "compare_optimizers": "Optimizers: SGD, Momentum, AdaGrad, RMSProp, Adam",
    "batchnorm_compare": "Batch normalization vs. weight scale",
    "overfitting": "Overfitting: weight decay and dropout",
    "lr_decay": "Learning-rate decay on moons",
    "hyperparameter_search": "Random search for lr and weight decay",
}


def argv_for(name, args) -> list:
    argv = ["--backend", args.backend, "--seed", str(args.seed), "--out", str(args.out)]
    if args.quick:
        argv.append("--quick")
    if name not in NO_DATASET and name not in GENERATED_ONLY:
        argv += ["--dataset", args.dataset]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if args.offline:
            argv.append("--offline")
    if name == "hyperparameter_search":
        if args.trials:
            argv += ["--trials", str(args.trials)]
        if args.narrow:
            argv += ["--narrow", str(args.narrow)]
        if args.workers:
            argv += ["--workers", str(args.workers)]
    return argv


def main(argv=None):
    p = common.parser("run_all", __doc__)
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="comma-separated experiments to run (default: all of "
                        f"{', '.join(EXPERIMENTS)})")
    p.add_argument("--trials", type=common.positive_int, default=None, metavar="T",
                   help="hyperparameter_search.py --trials (default: its own, 100)")
    p.add_argument("--narrow", type=common.positive_int, default=None, metavar="K",
                   help="hyperparameter_search.py --narrow (default: none)")
    p.add_argument("--workers", type=common.positive_int, default=None, metavar="N",
                   help="hyperparameter_search.py --workers (default: 1)")
    args = p.parse_args(argv)
    names = EXPERIMENTS
    if args.only:
        names = tuple(n.strip() for n in args.only.split(","))
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown:
            p.error(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
    run = common.start(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    records, failed = {}, []
    for i, name in enumerate(names):
        sub = argv_for(name, args)
        print(f"\n=== [{i + 1}/{len(names)}] {name} {' '.join(sub)}", flush=True)
        t0 = time.perf_counter()
        try:
            rec = importlib.import_module(name).main(sub)
            rec["command"] = f"python benchmarks/{name}.py " + shlex.join(sub)
            records[name] = rec
        except SystemExit as exc:
            failed.append(name)
            print(f"!!! {name} exited with status {exc.code}", flush=True)
        except common.UserError as exc:
            failed.append(name)
            print(f"!!! {name}: error: {exc}", flush=True)
        except Exception:
            failed.append(name)
            traceback.print_exc()
            print(f"!!! {name} failed after {time.perf_counter() - t0:.1f}s", flush=True)

    if common.dispatch is not None:  # the experiments reported their own kernel calls
        common.dispatch.reset_calls()
    index = _index(records, failed, args)
    (out / "index.md").write_text(index)
    fig = _contact_sheet(records, out)
    results = {n: {"command": r["command"], "summary": r["summary"],
                   "final": {"elapsed_s": r["elapsed_s"]}} for n, r in records.items()}
    cfg = {"experiments": list(names), "failed": failed,
           "command": "python benchmarks/run_all.py " + shlex.join(argv or sys.argv[1:])}
    rec = common.finish(run, cfg, results, fig,
                        {n: f"{r['elapsed_s']:.1f}s" for n, r in records.items()})
    print(f"index: {out / 'index.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)
    return rec


def _index(records, failed, args) -> str:
    lines = ["# accel: the chapter-6 experiments", "",
             f"Backend **{next(iter(records.values()))['backend'] if records else '?'}**, "
             f"kernel path **{common.kernel_path()}**, dataset **{args.dataset}** "
             f"(lr_decay: moons; optimizer_paths and activation_histograms: synthetic)"
             + (", **quick** settings" if args.quick else "") + ".", ""]
    if failed:
        lines += [f"Failed: {', '.join(failed)}", ""]
    for name, r in records.items():
        lines += [f"## {TITLES.get(name, name)}", "", f"`{r['command']}` — "
                  f"{r['elapsed_s']:.1f} s", "",
                  "<table><tr><td width=\"62%\">", "",
                  f"![{name}]({name}.png)", "", "</td><td>", "",
                  "| key number | value |", "|---|---|"]
        for k, v in r["summary"].items():
            lines.append(f"| {k} | {v} |")
        lines += ["", "</td></tr></table>", ""]
    return "\n".join(lines) + "\n"


def _contact_sheet(records, out):
    plt = common.pyplot()
    names = [n for n in records if (out / f"{n}.png").exists()]
    if not names:
        return None
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.imshow(plt.imread(out / f"{name}.png"))
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    common.cli(main)
