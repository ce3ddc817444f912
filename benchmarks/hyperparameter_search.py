"""Random search for the learning rate and weight decay (the book's §6.5, figure 6-24), as an
Optuna study (``accel.search``).

The data: 500 training samples drawn at random (seeded by ``--seed``) from the whole training
set, of which 20 % (100) are held out, at random, for validation. (The book's code takes the
first 500 samples, shuffles them and holds out the first 20 % after the shuffle; accel draws
its 500 from the whole set instead, so the classes are as balanced as the full set's.) A
784-100×6-10 ReLU net, SGD, batch 100, 50 epochs per trial; lr = 10^U(−6, −2) and weight
decay λ = 10^U(−8, −4), 100 trials, every trial from the same initial weights on the same
mini-batches; score = the validation accuracy after the last epoch.

Prints the ranking "Best-1 .. N" with each trial's lr and decay, plots the validation
(solid) and training (dashed) accuracy of the best 20, and the trials on the (lr, λ) plane
(pruned ones marked ×). ``--narrow K`` samples again inside the range the best K span (a
second study, ``--rounds`` in all). ``--sampler tpe`` and ``--pruner median|hyperband`` swap
in Optuna's TPE and pruning (the default, random and none, is the book's experiment).

The trials live in ``--storage`` (default: the SQLite file ``<out>/hyperparameter_search.db``):
running the same command again continues the study instead of starting over.
``--workers N`` starts N processes that share the study through the storage; with a
PostgreSQL URL, workers on other machines join by running the same command. ``--trials T``
is the total over all workers. Expected (book): the good trials have lr ≈ 1e-3..1e-2 and
λ ≈ 1e-8..1e-6.

    python benchmarks/hyperparameter_search.py [--trials 100] [--narrow 10] [--workers 2]
        [--storage postgresql+psycopg://user@host:5432/db] [--sampler tpe --pruner median]
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import common
import numpy as np
import optuna
from optuna.trial import TrialState

from accel import optim, search
from accel.preprocessing import train_val_split

DEFAULTS = {"samples": 500, "val_fraction": 0.2, "hidden": [100] * 6, "batch_size": 100,
            "epochs": 50, "trials": 100, "lr_log10": [-6, -2], "weight_decay_log10": [-8, -4],
            "narrow": None, "rounds": 1, "workers": 1, "sampler": "random", "pruner": "none",
            "show": 20, "blas_threads": None, "heartbeat_interval": 5}
QUICK = {"trials": 6, "epochs": 4, "show": 6, "heartbeat_interval": 1}
STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
         TrialState.FAIL: "failed"}


class Objective:
    """Train one net with ``params`` (lr, weight_decay); score = the validation accuracy after
    the last epoch. Picklable: the workers each get a copy, data included."""

    def __init__(self, data, backend, hidden, batch_size, epochs, seed, prune):
        self.data, self.backend, self.hidden = data, backend, hidden
        self.batch_size, self.epochs, self.seed, self.prune = batch_size, epochs, seed, prune

    def __call__(self, params, trial):
        import accel

        (x, t), (xv, tv) = self.data
        k = int(max(t.max(), tv.max())) + 1
        seed = search.trial_seed(self.seed, trial.number, "training")  # weights, batches
        net = accel.MultiLayerNet(x.shape[1], self.hidden, k, backend=self.backend,
                                  weight_decay=params["weight_decay"], seed=seed)
        # report each epoch's validation accuracy only when a pruner reads it (the book's
        # experiment runs without: one database write per trial, not per epoch)
        hook = search.pruning_hook(trial) if self.prune else None
        t0 = time.perf_counter()
        h = accel.Trainer(net, optim.SGD(params["lr"]), x, t, validation_data=(xv, tv),
                          epochs=self.epochs, batch_size=self.batch_size, seed=seed,
                          verbose=False, on_nonfinite=None, on_evaluate=hook).fit()
        print(f"  trial {trial.number:3d}  val acc {h.val_acc[-1]:.3f}  lr "
              f"{params['lr']:.3g}  decay {params['weight_decay']:.3g}  "
              f"({time.perf_counter() - t0:.1f}s, {trial.user_attrs.get('worker')})",
              flush=True)
        return h.val_acc[-1], {"val_acc": h.val_acc, "train_acc": h.train_acc,
                               "epochs": self.epochs}


def default_storage(out) -> str:
    return f"sqlite:///{Path(out).resolve() / 'hyperparameter_search.db'}"


def shown_url(url: str) -> str:
    """The storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def main(argv=None):
    p = common.parser("hyperparameter_search", __doc__)
    common.option(p, "--trials", DEFAULTS, QUICK,
                  "trials per round, complete or pruned, over all workers")
    common.option(p, "--epochs", DEFAULTS, QUICK, "epochs per trial")
    common.option(p, "--narrow", DEFAULTS, QUICK,
                  "after the first round, sample again inside the range of the best K",
                  metavar="K")
    p.add_argument("--rounds", type=common.positive_int, default=None,
                   help="rounds in all (default: 2 with --narrow, else 1)")
    common.option(p, "--workers", DEFAULTS, QUICK,
                  "worker processes on this machine sharing the study")
    common.option(p, "--sampler", DEFAULTS, QUICK, "random (the book's) or tpe", type=str,
                  choices=search.SAMPLERS)
    common.option(p, "--pruner", DEFAULTS, QUICK,
                  "none (the book's: every trial runs all epochs), median or hyperband",
                  type=str, choices=search.PRUNERS)
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: sqlite:///file.db or postgresql+psycopg://user@host:"
                        "port/db (default: the SQLite file <out>/hyperparameter_search.db)")
    p.add_argument("--study-name", default=None, metavar="NAME",
                   help="the study (default: from dataset, sampler, pruner and --quick)")
    p.add_argument("--blas-threads", type=common.positive_int, default=None, metavar="N",
                   help="fix each worker's BLAS to N threads (default: accel's thread policy, "
                        "which runs the book's products on one thread, so N workers use N "
                        "cores)")
    args = p.parse_args(argv)
    run = common.start(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    cfg = common.config_from(args, DEFAULTS, QUICK, ["trials", "epochs", "narrow", "rounds",
                                                     "workers", "sampler", "pruner",
                                                     "blas_threads"])
    if cfg["narrow"] and args.rounds is None:
        cfg["rounds"] = 2
    if cfg["rounds"] > 1 and not cfg["narrow"]:
        p.error("--rounds > 1 needs --narrow K")
    if cfg["narrow"] and cfg["rounds"] < 2:
        p.error("--narrow K needs --rounds 2 or more (or leave --rounds out)")
    url = args.storage or default_storage(args.out)
    if url == default_storage(args.out):
        Path(args.out).mkdir(parents=True, exist_ok=True)
    name = args.study_name or "-".join(
        [args.dataset, cfg["sampler"], cfg["pruner"]] + (["quick"] if args.quick else []))

    (x, t), _ = common.load_data(args)
    # 500 samples drawn at random from the whole training set (the book: its first 500),
    # then 20 % of them, at random, held out for validation
    x, t = common.subset(x, t, cfg["samples"], seed=args.seed)
    data = train_val_split(x, t, cfg["val_fraction"], seed=args.seed)
    print(f"  train {data[0][0].shape}, validation {data[1][0].shape}; {cfg['trials']} "
          f"trials × {cfg['rounds']} round(s), {cfg['workers']} worker(s), sampler "
          f"{cfg['sampler']}, pruner {cfg['pruner']}; study {name!r} in {shown_url(url)}",
          flush=True)
    space = {"lr": search.log_uniform(*(10.0 ** e for e in cfg["lr_log10"])),
             "weight_decay": search.log_uniform(*(10.0 ** e for e in
                                                  cfg["weight_decay_log10"]))}
    objective = Objective(data, run.backend.name, cfg["hidden"], cfg["batch_size"],
                          cfg["epochs"], args.seed, cfg["pruner"] != "none")
    # what the trials depend on: a study made with other settings is refused, not mixed
    attrs = {"setting": {"dataset": args.dataset, "samples": cfg["samples"],
                         "val_fraction": cfg["val_fraction"], "hidden": cfg["hidden"],
                         "batch_size": cfg["batch_size"], "epochs": cfg["epochs"],
                         "seed": args.seed, "sampler": cfg["sampler"],
                         "pruner": cfg["pruner"]}}
    check_study(url, name, attrs["setting"])
    if cfg["narrow"] is not None and cfg["narrow"] > cfg["trials"]:
        raise common.UserError(f"--narrow {cfg['narrow']} is more than --trials "
                               f"{cfg['trials']}: give --narrow K with K <= the trials")
    t0 = time.perf_counter()
    result = search.random_search(
        objective, cfg["trials"], space=space, seed=args.seed, narrow_top=cfg["narrow"],
        rounds=cfg["rounds"], sampler_name=cfg["sampler"], pruner_name=cfg["pruner"],
        pruner_kwargs={"epochs": cfg["epochs"]} if cfg["pruner"] == "hyperband" else {},
        study_name=name, storage_url=url, workers=cfg["workers"],
        blas_threads=cfg["blas_threads"], heartbeat_interval=cfg["heartbeat_interval"],
        attrs=attrs)
    search_s = time.perf_counter() - t0

    # the last round's trials best first, then the earlier rounds'
    ranked_r = [(r, tr) for r in reversed(range(len(result.studies)))
                for tr in search.rank(result.round(r))]
    ranked = [tr for _, tr in ranked_r]
    print("  ranking:")
    for i, tr in enumerate(ranked[:cfg["show"]]):
        print(f"    Best-{i + 1:<3d} (val acc: {score(tr):.3f}) | lr: {tr.params['lr']:.3g}, "
              f"weight decay: {tr.params['weight_decay']:.3g}"
              + ("" if tr.state == TrialState.COMPLETE else f"  [{STATE[tr.state]}]"))

    results = {}
    for i, (r, tr) in enumerate(ranked_r):  # curves for the best `show` (plotted) only
        ua = tr.user_attrs
        curves = ({"val_acc": ua.get("val_acc", []), "train_acc": ua.get("train_acc", [])}
                  if i < cfg["show"] else {})
        results[f"Best-{i + 1}"] = {
            "trial": tr.number, "round": r, "lr": tr.params.get("lr"),
            "weight_decay": tr.params.get("weight_decay"), "state": STATE[tr.state],
            "worker": ua.get("worker"), "epochs": epochs_of(tr), **curves,
            "final": {"val_acc": score(tr),
                      "train_acc": ua["train_acc"][-1] if ua.get("train_acc") else None}}

    fig = _figure(ranked, cfg, result, args.dataset)
    done = [tr for tr in ranked if tr.state == TrialState.COMPLETE]
    top = done[:min(10, len(done))]
    lrs = [tr.params["lr"] for tr in top]
    wds = [tr.params["weight_decay"] for tr in top]
    states = [STATE[tr.state] for tr in ranked]
    summary = {"best val acc": round(score(ranked[0]), 4),
               "best lr / weight decay": f"{ranked[0].params['lr']:.3g} / "
                                         f"{ranked[0].params['weight_decay']:.3g}",
               f"top-{len(top)} lr range": f"{min(lrs):.2g} .. {max(lrs):.2g}",
               f"top-{len(top)} weight decay range": f"{min(wds):.2g} .. {max(wds):.2g}",
               "trials complete / pruned / failed": "{} / {} / {}".format(
                   *(states.count(s) for s in ("complete", "pruned", "failed"))),
               "epochs trained": sum(epochs_of(tr) for tr in ranked)}
    return common.finish(run, cfg, results, fig, summary,
                         search={"spaces": result.spaces_dict(),
                                 "ranking": [tr.number for tr in ranked],
                                 "studies": [s.study_name for s in result.studies],
                                 "storage": shown_url(url), "search_s": round(search_s, 2)})


FLAGS = {"dataset": "--dataset", "epochs": "--epochs", "seed": "--seed",
         "sampler": "--sampler", "pruner": "--pruner"}


def check_study(url, name, setting) -> None:
    """A study of this name that was run with other settings: a UserError naming the flags
    that continue it (its trials depend on them) and the flag that starts another one."""
    try:  # through accel.search.storage, as the search itself opens it
        stored = optuna.load_study(study_name=name, storage=search.storage(url)) \
            .user_attrs.get("setting")
    except KeyError:  # no such study yet: this run creates it
        return
    except Exception as exc:  # noqa: BLE001 - the storage itself: the flag is --storage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise common.UserError(f"--storage {shown_url(url)}: {type(exc).__name__}: "
                               f"{first}") from None
    if stored is None or stored == setting:
        return
    diff = [k for k in setting if stored.get(k) != setting[k]]
    was = ", ".join(f"{FLAGS.get(k, k)} {stored.get(k)}" for k in diff)
    now = ", ".join(f"{FLAGS.get(k, k)} {setting[k]}" for k in diff)
    raise common.UserError(
        f"study {name!r} in {shown_url(url)} was run with {was} (this run: {now}); run with "
        f"{was} to continue it, or give --study-name NAME to start another study")


def score(tr) -> float:
    """A complete trial's value; a pruned one's last reported validation accuracy."""
    if tr.state == TrialState.COMPLETE:
        return tr.value
    if tr.intermediate_values:
        return tr.intermediate_values[max(tr.intermediate_values)]
    return float("nan")


def epochs_of(tr) -> int:
    return search.epochs_run(tr) if tr.state != TrialState.FAIL else 0


def _figure(ranked, cfg, result, dataset):
    plt = common.pyplot()
    show = ranked[:cfg["show"]]
    cols = 5
    rows = max(1, -(-len(show) // cols))
    fig = plt.figure(figsize=(3.0 * cols, 2.3 * rows + 4.2))
    gs = fig.add_gridspec(rows + 2, cols)
    for i, tr in enumerate(show):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        va, ta = tr.user_attrs.get("val_acc", []), tr.user_attrs.get("train_acc", [])
        pruned = tr.state == TrialState.PRUNED
        c = "tab:red" if pruned else "tab:blue"
        ax.plot(np.arange(len(va)), va, color=c, label="validation")
        ax.plot(np.arange(len(ta)), ta, color=c, ls="--", lw=0.9, label="train")
        ax.set_title(f"Best-{i + 1}: lr {tr.params['lr']:.1e}, λ {tr.params['weight_decay']:.0e}"
                     + (f" (pruned at {epochs_of(tr)})" if pruned else ""), fontsize=8,
                     color="tab:red" if pruned else "black")
        ax.set_xlim(0, cfg["epochs"])
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("accuracy", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("epoch", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    ax = fig.add_subplot(gs[rows:, :])
    sc = None
    for r in range(len(result.studies)):
        trs = [tr for tr in result.round(r) if tr.state == TrialState.COMPLETE]
        if trs:
            sc = ax.scatter([x.params["lr"] for x in trs],
                            [x.params["weight_decay"] for x in trs],
                            c=[x.value for x in trs], cmap="viridis", vmin=0, vmax=1,
                            marker="o^sD"[r % 4], edgecolor="k", lw=0.3, s=30,
                            label=f"round {r + 1}" + (" (narrowed)" if r else ""))
        pr = [tr for tr in result.round(r) if tr.state == TrialState.PRUNED]
        if pr:
            ax.scatter([x.params["lr"] for x in pr], [x.params["weight_decay"] for x in pr],
                       marker="x", color="tab:red", lw=0.8, s=22,
                       label=f"round {r + 1} pruned ({len(pr)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay λ")
    ax.legend(loc="upper left", fontsize=8)
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="validation accuracy")
    how = "random search" if cfg["sampler"] == "random" else "TPE search"
    if cfg["pruner"] != "none":
        how += f", {cfg['pruner']} pruning"
    fig.suptitle(f"{dataset}: {how}, {cfg['samples']} samples, {cfg['epochs']} epochs per "
                 f"trial, best {len(show)} of {len(ranked)}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    common.cli(main)
