"""What Optuna buys the book's hyperparameter search: workers and pruning, measured.

Runs ``hyperparameter_search.py`` (the book's setting: 500 samples, 784-100×6-10, 50 epochs
per trial, 100 trials, lr 10^U(−6,−2), λ 10^U(−8,−4)) several times, each in a fresh SQLite
study, and reports:

1. **workers**: the wall-clock time of the random search with 1 worker and with 2 worker
   processes sharing the study (accel's defaults: the book's products on one BLAS thread
   each), ``--repeats`` times each, alternating; the medians and their ratio. Every run
   samples the same 100 points (accel seeds trial n's draw by n).
2. **pruning**: the epochs a search trains before the mean validation accuracy of its best 5
   complete trials reaches that of the plain 100-trial random search (within 0.01),
   as a fraction of the epochs the plain search ran (100 × 50): random search with median
   pruning, TPE with median pruning, and both with Hyperband. Trials are counted in the order
   they ran (one worker).

    python benchmarks/speed/search_efficiency.py --dataset fashion-mnist [--trials 100] [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import optuna
import timing
from optuna.trial import TrialState

from accel import search

# the book's experiment plumbing and its search script, one folder up (benchmarks/)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import hyperparameter_search as hs  # noqa: E402

# worker processes, BLAS threads per worker (None: accel's thread policy, one thread for the
# book's products)
WORKER_CONFIGS = {"1 worker": (1, None), "2 workers": (2, None)}
SLUG = {"1 worker": "w1", "2 workers": "w2"}
DEFAULTS = {"trials": 100, "epochs": 50, "top": 5, "tol": 0.01, "repeats": 3,
            "searches": ["random/median", "tpe/median", "random/hyperband", "tpe/hyperband"]}
QUICK = {"trials": 10, "epochs": 4, "top": 2, "searches": ["random/median", "tpe/median"],
         "repeats": 1}


def run_search(args, tmp, tag, cfg, *, workers=1, sampler="random", pruner="none",
               blas=None):
    """One hyperparameter_search.py run in its own study; (wall seconds, study, record)."""
    out = Path(tmp) / tag
    url = f"sqlite:///{out / 'study.db'}"
    out.mkdir(parents=True)
    argv = ["--backend", args.backend, "--dataset", args.dataset, "--seed", str(args.seed),
            "--out", str(out), "--storage", url, "--study-name", tag,
            "--trials", str(cfg["trials"]), "--epochs", str(cfg["epochs"]),
            "--workers", str(workers), "--sampler", sampler, "--pruner", pruner]
    if blas:
        argv += ["--blas-threads", str(blas)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.offline:
        argv.append("--offline")
    print(f"--- {tag}: hyperparameter_search.py {' '.join(argv[8:])}", flush=True)
    t0 = time.perf_counter()
    record = hs.main(argv)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=tag, storage=url)
    return wall, study, record


def progress(study, top):
    """Trials in the order they ran: (cumulative epochs, mean of the best ``top`` complete
    trials so far) after each."""
    trials = sorted(study.get_trials(deepcopy=False, states=search.DONE),
                    key=lambda t: (t.datetime_start, t.number))
    epochs, best, out = 0, [], []
    for t in trials:
        epochs += t.user_attrs.get("epochs", 0) if t.state == TrialState.COMPLETE \
            else search.epochs_run(t)
        if t.state == TrialState.COMPLETE:
            best = sorted([*best, t.value], reverse=True)[:top]
        out.append((epochs, sum(best) / len(best) if len(best) == top else None))
    return out


def main(argv=None):
    p = common.parser("search_efficiency", __doc__, default_dataset="fashion-mnist")
    common.option(p, "--trials", DEFAULTS, QUICK, "trials per search")
    common.option(p, "--repeats", DEFAULTS, QUICK,
                  "timed runs of each worker count (alternating)")
    args = p.parse_args(argv)
    timing.check_load()
    run = common.start(args)
    cfg = common.config_from(args, DEFAULTS, QUICK, ["trials", "repeats"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # untimed: compile the kernels and read the data once, as any earlier run would have
        run_search(args, tmp, "warm-up", dict(cfg, trials=2, epochs=1))
        # 1. workers: the same 100 trials on 1 and on 2 processes
        walls = {c: [] for c in WORKER_CONFIGS}
        plain = None
        for rep in range(cfg["repeats"]):
            for c, (w, blas) in WORKER_CONFIGS.items():
                wall, study, _ = run_search(args, tmp, f"random-none-{SLUG[c]}-r{rep}", cfg,
                                            workers=w, blas=blas)
                walls[c].append(round(wall, 2))
                plain = plain or (study if w == 1 else None)
                done = study.get_trials(deepcopy=False, states=search.DONE)
                assert len(done) == cfg["trials"], (c, len(done))
        med = {c: timing.spread(v)["median"] for c, v in walls.items()}
        one = med["1 worker"]
        results["workers"] = {"wall_s": walls, "final": {
            "median_wall_s": med, **{f"ratio {c} / 1 worker": round(m / one, 3)
                                     for c, m in med.items() if c != "1 worker"}}}

        # 2. pruning: epochs until the best-5 mean reaches the plain search's
        base = progress(plain, cfg["top"])
        base_epochs = base[-1][0]
        target = base[-1][1]
        results["random/none"] = {"cumulative_epochs": [e for e, _ in base],
                                  "best_mean": [m for _, m in base],
                                  "final": {"best_mean": target, "epochs_total": base_epochs,
                                            "epochs_to_target": _reach(base, target,
                                                                       cfg["tol"]),
                                            "wall_s": walls["1 worker"][0]}}
        for s in cfg["searches"]:
            sampler, pruner = s.split("/")
            wall, study, _ = run_search(args, tmp, s.replace("/", "-"), cfg, sampler=sampler,
                                        pruner=pruner)
            prog = progress(study, cfg["top"])
            reach = _reach(prog, target, cfg["tol"])
            states = [t.state for t in study.get_trials(deepcopy=False)]
            results[s] = {
                "cumulative_epochs": [e for e, _ in prog], "best_mean": [m for _, m in prog],
                "final": {"best_mean": prog[-1][1], "epochs_total": prog[-1][0],
                          "epochs_to_target": reach,
                          "fraction_of_plain": None if reach is None else
                          round(reach / base_epochs, 3),
                          "trials_to_target": None if reach is None else
                          1 + [e for e, _ in prog].index(reach),
                          "complete": states.count(TrialState.COMPLETE),
                          "pruned": states.count(TrialState.PRUNED),
                          "wall_s": round(wall, 2)}}
    summary = {**{k: v for k, v in results["workers"]["final"].items() if k.startswith("ratio")},
               f"plain random: best-{cfg['top']} mean": round(target, 4)}
    for s in cfg["searches"]:
        f = results[s]["final"]
        summary[f"{s}: epochs to reach it"] = (
            f"{f['epochs_to_target']} = {f['fraction_of_plain']} of {base_epochs}"
            if f["epochs_to_target"] is not None else f"not reached in {f['epochs_total']}")
    fig = _figure(results, cfg, target, args.dataset)
    return common.finish(run, cfg, results, fig, summary)


def _reach(prog, target, tol):
    """The first cumulative epoch count at which the best mean is within ``tol`` of
    ``target``, or None."""
    for e, m in prog:
        if m is not None and m >= target - tol - 1e-12:
            return e
    return None


def _figure(results, cfg, target, dataset):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (s, r) in enumerate((k, v) for k, v in results.items() if k != "workers"):
        ax.plot(r["cumulative_epochs"], [m if m is not None else float("nan")
                                         for m in r["best_mean"]],
                color=f"C{i}", label=s, drawstyle="steps-post")
    ax.axhline(target - cfg["tol"], color="k", ls=":", lw=0.8,
               label=f"plain random best-{cfg['top']} mean − {cfg['tol']}")
    ax.set_xlabel("epochs trained, all trials so far")
    ax.set_ylabel(f"mean validation accuracy of the best {cfg['top']}")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: {cfg['trials']} trials × {cfg['epochs']} epochs per trial "
                 "(the book's setting)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    common.cli(main)
