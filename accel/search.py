"""The book's hyperparameter search (§6.5) as an Optuna study.

Optuna is the engine; this module keeps the book's words and adds only what Optuna does not
do. The book (and course 2, week 3) tunes by sampling at random on a log scale, lr =
10^U(−6, −2) and weight decay λ = 10^U(−8, −4) rather than U(1e-6, 1e-2), running 100 trials,
looking at the best ones and sampling again inside the range they span::

    from accel import search

    def objective(params, trial):          # params = {"lr": ..., "weight_decay": ...}
        net = MultiLayerNet(784, [100] * 6, 10, weight_decay=params["weight_decay"])
        h = Trainer(net, SGD(params["lr"]), x, t, validation_data=(xv, tv), epochs=50,
                    on_evaluate=search.pruning_hook(trial)).fit()
        return h.val_acc[-1], {"val_acc": h.val_acc}      # score (+ info kept in the trial)

    result = search.random_search(objective, n_trials=100, seed=0, narrow_top=10)
    result.best.params                     # round 2's best: {"lr": ..., "weight_decay": ...}
    result.ranked()[:5]                    # the five best trials (Optuna FrozenTrials)

What each of the book's words is in Optuna:

- a log-uniform range is ``FloatDistribution(low, high, log=True)``, drawn with
  ``trial.suggest_float(name, low, high, log=True)`` (:func:`log_uniform`, :data:`BOOK_SPACE`);
- random search is ``RandomSampler``; ``sampler="tpe"`` gives ``TPESampler`` instead;
- "narrow to the range of the best K and search again" is a second study (named
  ``<study>/narrow<K>-round2``) over the ranges :func:`narrow` computes;
- stopping hopeless trials early is an Optuna pruner (``pruner="median"`` or
  ``"hyperband"``), fed by :func:`pruning_hook` through the Trainer's ``on_evaluate``;
- where the trials are kept is an Optuna RDB storage (:func:`storage`): a SQLite file, or
  PostgreSQL (``postgresql+psycopg://user@host:port/db``) shared by many machines. Running the
  same search again on the same storage continues it.

What this module adds:

- :func:`sampler`: the seed is turned into one stream per trial *number*, so trial n draws
  the same point however many workers (on however many machines) run the study; N workers
  each holding ``RandomSampler(seed)`` would all draw the same points.
- :func:`run_study` / ``workers=N``: N worker processes that join one study through its
  storage and stop when exactly ``n_trials`` trials are complete or pruned in all (Optuna's
  ``MaxTrialsCallback`` alone lets every worker start one more trial at the end). A worker
  killed mid-trial loses nothing: its heartbeat stops, after ``grace_period`` seconds its
  trial is marked FAIL and re-queued with the same parameters, and a live worker runs it.
- :class:`SearchResult`: the rounds' studies and spaces, the trials ranked best first.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing as mp
import numbers
import os
import socket
import time
import warnings
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from . import checks

__all__ = ["BOOK_SPACE", "log_uniform", "uniform", "suggest", "sampler", "pruner", "storage",
           "pruning_hook", "rank", "narrow", "run_study", "random_search", "SearchResult",
           "epochs_run", "space_entry", "SAMPLERS", "PRUNERS"]

SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "hyperband")
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
TAKEN = (*DONE, TrialState.RUNNING, TrialState.WAITING)


def _finite(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def log_uniform(low, high) -> FloatDistribution:
    """10^U(log10 low, log10 high): every decade between low and high equally likely."""
    return FloatDistribution(_finite("low", low), _finite("high", high), log=True)


def uniform(low, high) -> FloatDistribution:
    return FloatDistribution(_finite("low", low), _finite("high", high))


def _book_space():
    return {"lr": log_uniform(1e-6, 1e-2), "weight_decay": log_uniform(1e-8, 1e-4)}


#: The book's ranges (§6.5): lr = 10^U(−6, −2), weight decay λ = 10^U(−8, −4).
BOOK_SPACE = _book_space()


def _check_space(space):
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict of name → Optuna distribution, e.g. "
                         "search.BOOK_SPACE")
    for k, d in space.items():
        if not isinstance(d, (FloatDistribution, IntDistribution, CategoricalDistribution)):
            raise TypeError(f"space[{k!r}] = {d!r} is not an Optuna distribution (use "
                            "search.log_uniform(low, high) or optuna.distributions.*)")
    return space


def suggest(trial, space: dict) -> dict:
    """{name: value}, each drawn by ``trial.suggest_*`` from its distribution in ``space``."""
    out = {}
    for k, d in _check_space(space).items():
        if isinstance(d, FloatDistribution):
            out[k] = trial.suggest_float(k, d.low, d.high, log=d.log, step=d.step)
        elif isinstance(d, IntDistribution):
            out[k] = trial.suggest_int(k, d.low, d.high, log=d.log, step=d.step)
        else:
            out[k] = trial.suggest_categorical(k, d.choices)
    return out


# -- samplers: one seeded stream per trial number


def trial_seed(seed, number: int, purpose: str = "sampler"):
    """A seed of trial ``number``'s own, for ``purpose`` ("sampler": its draw; anything else,
    e.g. "training": the network's weights and the batches), derived from the search's
    ``seed`` (None gives None). Every worker derives the same one for the same trial, and no
    two trials share one: as in the book, each trial's network starts from its own random
    weights (identical starts would also tie the hopeless trials' accuracies, and a median
    pruner prunes only below the median)."""
    if seed is None:
        return None
    key = f"{seed}/{number}" if purpose == "sampler" else f"{seed}/{number}/{purpose}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


class _PerTrialSeed(optuna.samplers.BaseSampler):
    """Delegates to ``make(seed_of_this_trial)``: trial n samples from its own stream."""

    def __init__(self, make, seed: int, name: str):
        self._make, self._seed, self.name = make, seed, name
        self._by_trial = {}

    def _for(self, trial):
        s = self._by_trial.get(trial.number)
        if s is None:
            s = self._by_trial[trial.number] = self._make(trial_seed(self._seed, trial.number))
        return s

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name,
                                                   param_distribution)

    def before_trial(self, study, trial):
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        s = self._by_trial.pop(trial.number, None)
        if s is not None:
            s.after_trial(study, trial, state, values)

    def reseed_rng(self):
        pass

    def __repr__(self):
        return f"{self.name}(seed={self._seed}, one stream per trial number)"


def sampler(name: str = "random", seed: int | None = None) -> optuna.samplers.BaseSampler:
    """``RandomSampler`` (the book's random search) or ``TPESampler`` ("tpe").

    With a ``seed``, trial number n samples from a stream seeded by (seed, n), so a study's
    points do not depend on how many workers run it or in which order they finish (TPE's
    choices still depend on the trials finished before it)."""
    make = {"random": lambda s: optuna.samplers.RandomSampler(seed=s),
            "tpe": lambda s: optuna.samplers.TPESampler(seed=s)}
    if name not in make:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")
    if seed is None:
        return make[name](None)
    return _PerTrialSeed(make[name], int(seed), f"{name}")


def pruner(name: str = "none", *, epochs: int | None = None, startup_trials: int = 5,
           warmup_epochs: int = 5) -> optuna.pruners.BasePruner:
    """"none" (the book's experiment: every trial runs all its epochs), "median" (stop a
    trial whose best validation accuracy so far is below the median of the earlier trials'
    at the same epoch, once ``startup_trials`` trials have finished, from epoch
    ``warmup_epochs`` on) or
    "hyperband" (successive halving from 1 epoch up to ``epochs``, a factor 3 per rung)."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1,
                                              max_resource=epochs or "auto",
                                              reduction_factor=3)
    raise ValueError(f"pruner must be one of {PRUNERS}, got {name!r}")


def storage(url: str | None = None, *, heartbeat_interval: int = 5,
            grace_period: int | None = None, max_retry: int | None = 3):
    """An Optuna RDB storage at ``url`` ("sqlite:///path/to/file.db",
    "postgresql+psycopg://user@host:port/db"), or an in-memory one when ``url`` is None.

    Every running trial writes a heartbeat each ``heartbeat_interval`` seconds; a trial
    without one for ``grace_period`` seconds (default 4 heartbeats) is marked FAIL and
    re-queued with its parameters, at most ``max_retry`` times."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # many processes on one file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    with _quiet():
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 4 * heartbeat_interval,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry))


@contextlib.contextmanager
def _quiet():
    """Optuna's experimental-feature warnings (heartbeat, fail_stale_trials) say nothing to a
    user of this module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# -- pruning through the Trainer's on_evaluate hook


def pruning_hook(trial, metric: str = "val_acc", keep=("val_acc", "train_acc")):
    """An ``on_evaluate(trainer)`` for ``accel.Trainer`` that reports ``history.<metric>``
    after each epoch (``trial.report(value, epoch)``) and, when the study's pruner says so,
    keeps the curves ``keep`` in the trial's user attributes and raises
    ``optuna.TrialPruned``, which ends ``fit()``. The evaluation before training (epoch 0)
    is not reported."""

    def on_evaluate(trainer):
        values = getattr(trainer.history, metric)
        if not values:
            raise ValueError(f"the trainer records no {metric!r} (pass validation_data=)")
        step = trainer.epoch
        if step < 1:
            return
        trial.report(float(values[-1]), step)
        if trial.should_prune():
            for k in keep:
                trial.set_user_attr(k, [float(v) for v in getattr(trainer.history, k)])
            raise optuna.TrialPruned(f"pruned after epoch {step}: {metric} {values[-1]:.4g}")

    return on_evaluate


def epochs_run(trial) -> int:
    """Epochs a finished trial trained: its last reported step (a trial that reported
    nothing: its "epochs" user attribute, else 0)."""
    if trial.intermediate_values:
        return max(trial.intermediate_values)
    return int(trial.user_attrs.get("epochs", 0))


# -- narrowing


def _rank_key(trial, maximize):
    if trial.state == TrialState.COMPLETE and trial.value is not None and \
            not math.isnan(trial.value):
        return (0, -trial.value if maximize else trial.value, trial.number)
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        last = trial.intermediate_values[max(trial.intermediate_values)]
        return (1, -last if maximize else last, trial.number)
    return (2, 0.0, trial.number)


def rank(trials, maximize: bool = True) -> list:
    """Complete trials best first, then pruned ones by their last report, then the rest."""
    return sorted(trials, key=lambda tr: _rank_key(tr, maximize))


def narrow(space: dict, trials, top: int, maximize: bool = True, margin: float = 0.0) -> dict:
    """A new space whose every range just spans the values of the ``top`` best complete
    trials (for a log range, from the smallest to the largest value: the same span in
    decades), widened by ``margin`` of that width on each side (in the sampling scale) and
    kept inside the old range. A categorical keeps the choices the best trials took."""
    _check_space(space)
    checks.integer("top", top, low=1)
    best = [tr for tr in rank(trials, maximize)[:top] if _rank_key(tr, maximize)[0] == 0]
    if not best:
        raise ValueError("no complete trial with a score to narrow around")
    out = {}
    for k, d in space.items():
        vals = [tr.params[k] for tr in best]
        if isinstance(d, CategoricalDistribution):
            out[k] = CategoricalDistribution([c for c in d.choices if c in vals])
            continue
        to, back = (math.log, math.exp) if d.log else (float, float)
        lo, hi = min(vals), max(vals)
        if margin:
            pad = margin * (to(hi) - to(lo))
            lo, hi = max(back(to(lo) - pad), d.low), min(back(to(hi) + pad), d.high)
        if isinstance(d, IntDistribution):
            out[k] = IntDistribution(int(lo), int(hi), log=d.log)
        else:
            out[k] = FloatDistribution(lo, hi, log=d.log)
    return out


# -- running a study: one process or N workers sharing its storage


class _Surplus(Exception):
    """This trial started after the study already had its n_trials: it is not run."""


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Objective:
    """Optuna's objective(trial) around the user's objective(params, trial)."""

    def __init__(self, objective, space, n_trials):
        self.objective, self.space, self.n_trials = objective, space, n_trials

    def __call__(self, trial):
        trial.set_user_attr("worker", _worker_name())
        # Exact total: of the trials not failed, this one must be among the first n_trials
        # (two workers may both have seen one free place and asked for a trial).
        alive = sorted(t.number for t in trial.study.get_trials(deepcopy=False, states=TAKEN))
        if trial.number in alive and alive.index(trial.number) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number}: the study already has {self.n_trials}")
        params = suggest(trial, self.space)
        out = self.objective(params, trial)
        score, info = out if isinstance(out, tuple) else (out, {})
        for k, v in (info or {}).items():
            trial.set_user_attr(k, v)
        return float(score)


def _counts(study) -> dict:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def _work(study, objective, space, n_trials, poll=0.5, blas_threads=None):
    """One worker: run trials of ``study`` (a Study, or the arguments of :func:`_load`)
    until n_trials of them are complete or pruned."""
    with contextlib.ExitStack() as stack:
        if blas_threads:
            from .threads import blas_threads as limit

            stack.enter_context(limit(blas_threads))
        if not isinstance(study, optuna.Study):  # a spawned worker
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = _load(**study)
        wrapped = _Objective(objective, space, n_trials)
        while True:
            with _quiet():
                optuna.storages.fail_stale_trials(study)
            c = _counts(study)
            done = sum(c[s] for s in DONE)
            if done >= n_trials:
                return study
            if c[TrialState.WAITING] or done + c[TrialState.RUNNING] < n_trials:
                # one trial at a time: the check above runs before each (MaxTrialsCallback
                # would let each worker start one more trial after the last place is taken)
                with _quiet():
                    study.optimize(wrapped, n_trials=1, catch=(_Surplus,))
            else:  # every place is taken by a running trial: wait (its worker may be dead)
                time.sleep(poll)


def _load(study_name, storage_url, sampler_name, seed, pruner_name, pruner_kwargs, direction,
          storage_kwargs):
    return optuna.create_study(
        study_name=study_name, storage=storage(storage_url, **storage_kwargs),
        sampler=sampler(sampler_name, seed), pruner=pruner(pruner_name, **pruner_kwargs),
        direction=direction, load_if_exists=True)


def _check_attrs(study, attrs: dict) -> None:
    """Keep ``attrs`` (what the trials depend on: space, settings) in the study; refuse to
    continue a study made with other ones."""
    for k, v in attrs.items():
        stored = study.user_attrs.get(k)
        if stored is None:
            study.set_user_attr(k, v)
        elif stored != v:
            raise ValueError(f"study {study.study_name!r} in this storage was run with {k} = "
                             f"{stored!r}, not {v!r}: pass another study name to start anew")


def run_study(objective, space: dict, n_trials: int, *, study_name: str = "search",
              storage_url: str | None = None, sampler_name: str = "random", seed=None,
              pruner_name: str = "none", pruner_kwargs=None, direction: str = "maximize",
              workers: int = 1, heartbeat_interval: int = 5, grace_period: int | None = None,
              blas_threads: int | None = None, poll: float = 0.5,
              attrs: dict | None = None) -> optuna.Study:
    """Run (or continue) the study ``study_name`` in ``storage_url`` until exactly
    ``n_trials`` of its trials are complete or pruned, with ``workers`` processes.

    ``objective(params, trial) -> score`` or ``-> (score, info)``; ``params`` is drawn from
    ``space``; ``info`` is kept in the trial's user attributes; ``trial`` is for
    :func:`pruning_hook`. With ``workers > 1`` (spawned processes) the objective must be
    picklable and ``storage_url`` an RDB URL; ``blas_threads`` limits each worker's BLAS.
    More workers on other machines join by running the same call on the same URL.
    ``attrs`` (JSON values: the settings the trials depend on) are stored in the study, and a
    study stored with other values is refused."""
    _check_space(space)
    checks.integer("n_trials", n_trials, low=1)
    checks.integer("workers", workers, low=1)
    if workers > 1 and storage_url is None:
        raise ValueError("workers > 1 share the study through a storage: pass storage_url "
                         "(e.g. 'sqlite:///search.db')")
    how = dict(study_name=study_name, storage_url=storage_url, sampler_name=sampler_name,
               seed=seed, pruner_name=pruner_name, pruner_kwargs=dict(pruner_kwargs or {}),
               direction=direction,
               storage_kwargs={"heartbeat_interval": heartbeat_interval,
                               "grace_period": grace_period})
    study = _load(**how)  # created here once, before any worker races to
    space_json = {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}
    _check_attrs(study, {"space": space_json, **(attrs or {})})
    if workers == 1:
        return _work(study, objective, space, n_trials, poll, blas_threads)
    # spawn, not fork: safe with thread pools and CUDA contexts already in this process
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_work, args=(how, objective, space, n_trials, poll,
                                             blas_threads), name=f"search-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    done = len(study.get_trials(deepcopy=False, states=DONE))
    if done < n_trials:
        raise RuntimeError(f"worker exit statuses {[p.exitcode for p in procs]}: the study "
                           f"has {done} of {n_trials} trials; run again to continue it")
    if bad:
        warnings.warn(f"{len(bad)} worker(s) exited with status {bad}; the study is complete",
                      stacklevel=2)
    return study


# -- the book's search


@dataclass
class SearchResult:
    """The studies of a search's rounds, the space of each, and the ranking."""

    studies: list
    spaces: list
    maximize: bool = True

    def round(self, r: int) -> list:
        """The finished trials of round ``r`` (0-based)."""
        return [t for t in self.studies[r].get_trials(deepcopy=False)
                if t.state in (*DONE, TrialState.FAIL) and not t.user_attrs.get("surplus")]

    @property
    def trials(self) -> list:
        return [t for r in range(len(self.studies)) for t in self.round(r)]

    def ranked(self) -> list:
        """The last round's trials best first (complete, then pruned, then failed); the
        earlier rounds' after them."""
        return [t for r in reversed(range(len(self.studies)))
                for t in rank(self.round(r), self.maximize)]

    @property
    def best(self):
        return rank(self.trials, self.maximize)[0]

    def spaces_dict(self) -> list:
        """Each round's space as JSON-ready dicts: {"low", "high", "log"} or {"choices"}."""
        return [{k: space_entry(d) for k, d in s.items()} for s in self.spaces]


def space_entry(d) -> dict:
    if isinstance(d, CategoricalDistribution):
        return {"kind": "choice", "choices": list(d.choices)}
    return {"kind": "log_uniform" if d.log else "uniform", "low": d.low, "high": d.high,
            "log": d.log}


def random_search(objective, n_trials: int = 100, *, space: dict | None = None, seed=None,
                  narrow_top: int | None = None, rounds: int | None = None,
                  margin: float = 0.0, sampler_name: str = "random",
                  pruner_name: str = "none", pruner_kwargs=None, maximize: bool = True,
                  study_name: str = "search", storage_url: str | None = None,
                  workers: int = 1, **run_kwargs) -> SearchResult:
    """The book's search: ``n_trials`` trials (100) over ``space`` (default
    :data:`BOOK_SPACE`: lr 10^U(−6, −2), weight decay 10^U(−8, −4)); with ``narrow_top=K``,
    a second round (``rounds`` in all, 2 by default) of ``n_trials`` trials inside the ranges
    of the best K so far. ``sampler_name="tpe"`` and ``pruner_name="median"`` or
    ``"hyperband"`` swap in Optuna's TPE and pruners; the rest (storage, workers, heartbeat)
    goes to :func:`run_study`. Each round is its own study: ``study_name`` and then
    ``<study_name>/narrow<K>-round<r>``; each study stores its space (a second run on the
    same storage continues the rounds, and refuses a study made over other ranges)."""
    space = _check_space(dict(space or BOOK_SPACE))
    rounds = rounds if rounds is not None else (2 if narrow_top else 1)
    checks.integer("rounds", rounds, low=1)
    if rounds > 1 and narrow_top is None:
        raise ValueError("rounds > 1 needs narrow_top (how many best trials set the range)")
    if narrow_top is not None:  # checked now, not after a first round of training
        checks.integer("narrow_top", narrow_top, low=1, high=checks.integer("n_trials", n_trials,
                                                                             low=1))
    direction = "maximize" if maximize else "minimize"
    studies, spaces = [], []
    for r in range(rounds):
        name = study_name if r == 0 else f"{study_name}/narrow{narrow_top}-round{r + 1}"
        if r:
            space = narrow(space, [t for s in studies for t in s.get_trials(deepcopy=False)],
                           narrow_top, maximize, margin)
        study = run_study(objective, space, n_trials, study_name=name,
                          storage_url=storage_url, sampler_name=sampler_name, seed=seed,
                          pruner_name=pruner_name, pruner_kwargs=pruner_kwargs,
                          direction=direction, workers=workers, **run_kwargs)
        studies.append(study)
        spaces.append(space)
    return SearchResult(studies, spaces, maximize)
