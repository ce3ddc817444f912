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
- One lock per study, shared by every process and machine that works on it, around the
  bookkeeping (failing stale trials and re-queueing them, counting, starting a trial,
  recording its result): so each stale trial is retried exactly once and no trial beyond
  ``n_trials`` is ever started, on SQLite as on PostgreSQL. On SQLite it is ``flock`` on the
  file ``<database>.lock`` beside the database (every process using a SQLite file is on its
  machine); on PostgreSQL a session advisory lock, which the server releases when its holder's
  connection ends (a killed worker too). Creating the storage's tables takes such a lock too,
  so processes started together on a fresh database do not race to create them.
- A study keeps its settings (space, sampler, seed, pruner, direction, ``attrs``): a call
  that disagrees with them, or asks for fewer trials than it already has, is refused by name.
- :class:`SearchResult`: the rounds' studies and spaces, the trials ranked best first.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import multiprocessing as mp
import os
import pickle
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: SQLite studies are not locked there
    fcntl = None

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from . import checks

__all__ = ["BOOK_SPACE", "log_uniform", "uniform", "suggest", "sampler", "pruner", "storage",
           "pruning_hook", "rank", "narrow", "run_study", "random_search", "SearchResult",
           "epochs_run", "space_entry", "SAMPLERS", "PRUNERS", "DIRECTIONS",
           "StorageUnavailableError", "TrialsFailedError"]

SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
METRICS = ("val_acc", "train_acc", "test_acc")  # History's accuracy lists
MAX_RETRY = 3  # times a trial whose worker died is queued again


class StorageUnavailableError(RuntimeError):
    """The study's database cannot be reached (a server stopped, or refused the connection).
    Nothing a finished trial recorded is lost: run the same call again when it is back."""


class TrialsFailedError(RuntimeError):
    """More trials failed (the objective returned NaN) than ``max_failed`` allows."""


def log_uniform(low, high) -> FloatDistribution:
    """10^U(log10 low, log10 high): every decade between low and high equally likely."""
    return FloatDistribution(checks.number("low", low, low=0, open_low=True),
                             checks.number("high", high, low=0, open_low=True), log=True)


def uniform(low, high) -> FloatDistribution:
    return FloatDistribution(checks.number("low", low), checks.number("high", high))


def _book_space():
    return {"lr": log_uniform(1e-6, 1e-2), "weight_decay": log_uniform(1e-8, 1e-4)}


#: The book's ranges (§6.5): lr = 10^U(−6, −2), weight decay λ = 10^U(−8, −4).
BOOK_SPACE = _book_space()


def _check_space(space):
    if not isinstance(space, dict):
        raise TypeError(f"space must be a dict of name → Optuna distribution, e.g. "
                        f"search.BOOK_SPACE, got {space!r:.200}")
    if not space:
        raise ValueError("space must be a non-empty dict of name → Optuna distribution, e.g. "
                         "search.BOOK_SPACE")
    for k, d in space.items():
        if not isinstance(d, (FloatDistribution, IntDistribution, CategoricalDistribution)):
            raise TypeError(f"space[{k!r}] = {d!r} is not an Optuna distribution (use "
                            "search.log_uniform(low, high) or optuna.distributions.*)")
    return space


def suggest(trial, space: dict) -> dict:
    """{name: value}, each drawn by ``trial.suggest_*`` from its distribution in ``space``."""
    if not callable(getattr(trial, "suggest_float", None)):
        raise TypeError(f"trial must be an Optuna trial, got {trial!r:.200}")
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
    checks.integer("number", number, low=0)
    if not isinstance(purpose, str):
        raise TypeError(f"purpose must be a string such as 'training', got {purpose!r:.100}")
    if checks.seed("seed", seed) is None:
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
    if not isinstance(name, str) or name not in make:
        raise ValueError(f"sampler name={name!r:.100} is not one of {SAMPLERS}")
    seed = checks.seed("seed", seed)
    if seed is None:
        return make[name](None)
    return _PerTrialSeed(make[name], seed, f"{name}")


def pruner(name: str = "none", *, epochs: int | None = None, startup_trials: int = 5,
           warmup_epochs: int = 5) -> optuna.pruners.BasePruner:
    """"none" (the book's experiment: every trial runs all its epochs), "median" (stop a
    trial whose best validation accuracy so far is below the median of the earlier trials'
    at the same epoch, once ``startup_trials`` trials have finished, from epoch
    ``warmup_epochs`` on) or
    "hyperband" (successive halving from 1 epoch up to ``epochs``, a factor 3 per rung)."""
    checks.optional(checks.integer, "epochs", epochs, low=1)
    checks.integer("startup_trials", startup_trials, low=0)
    checks.integer("warmup_epochs", warmup_epochs, low=0)
    if name is not None and not isinstance(name, str):
        raise ValueError(f"pruner name={name!r:.100} is not one of {PRUNERS}")
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1,
                                              max_resource=epochs or "auto",
                                              reduction_factor=3)
    raise ValueError(f"pruner name={name!r:.100} is not one of {PRUNERS}")


def storage(url: str | None = None, *, heartbeat_interval: int = 5,
            grace_period: int | None = None, max_retry: int | None = MAX_RETRY):
    """An Optuna RDB storage at ``url`` ("sqlite:///path/to/file.db",
    "postgresql+psycopg://user@host:port/db"; a plain "postgresql://" uses psycopg, the
    driver of the ``[postgres]`` extra), or an in-memory one when ``url`` is None.

    Every running trial writes a heartbeat each ``heartbeat_interval`` seconds; a trial
    without one for ``grace_period`` seconds (default 4 heartbeats) is marked FAIL and
    re-queued with its parameters, at most ``max_retry`` times. A database that cannot be
    reached raises StorageUnavailableError."""
    checks.integer("heartbeat_interval", heartbeat_interval, low=1)
    checks.optional(checks.integer, "grace_period", grace_period, low=1)
    checks.optional(checks.integer, "max_retry", max_retry, low=0)
    if url is None:
        return optuna.storages.InMemoryStorage()
    u = _parse_url(url)
    engine_kwargs = {}
    if u.get_backend_name() == "sqlite":
        # many processes on one file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    with _storage_errors(url), _StorageLock(url, "schema"), _quiet():
        return optuna.storages.RDBStorage(
            u.render_as_string(hide_password=False), engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 4 * heartbeat_interval,
            heartbeat_stale_trial_callback=_retry_callback(max_retry))


def _parse_url(url, name="url"):
    """``url`` as a SQLAlchemy URL of a SQLite file or a PostgreSQL database whose driver is
    installed; ValueError/TypeError/ModuleNotFoundError in one line, calling it ``name``,
    otherwise."""
    if not isinstance(url, str):
        raise TypeError(f"storage {name} must be a string such as 'sqlite:///search.db', got "
                        f"{url!r:.200}")
    try:
        u = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ValueError(f"storage {name}={url!r:.200} is not a database URL: use "
                         "'sqlite:///path/to/search.db' or "
                         "'postgresql+psycopg://user@host:5432/db'") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database
        if db and db != ":memory:" and not db.startswith("file:") and \
                not Path(db).expanduser().resolve().parent.is_dir():
            raise ValueError(f"storage {name}={url!r}: the folder {str(Path(db).parent)!r} "
                             "does not exist")
        return u
    if backend != "postgresql":
        raise ValueError(f"storage {name}={_shown(url)!r}: accel.search keeps studies in "
                         f"SQLite or PostgreSQL, not {backend!r}")
    if u.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
        u = u.set(drivername="postgresql+psycopg")
    driver = u.get_driver_name()
    try:
        importlib.import_module(driver)
    except ImportError:
        how = "install accel's [postgres] extra: pip install -e '.[postgres]' in a clone " \
            "of accel, or pip install 'psycopg[binary]'" if driver == "psycopg" else \
            f"pip install {driver}"
        raise ModuleNotFoundError(f"storage {name}={_shown(url)!r} needs the PostgreSQL driver "
                                  f"{driver!r}, which is not installed: {how}") from None
    return u


def _shown(url) -> str:
    """The URL without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return str(url)


_UNREACHABLE = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError)


def _unreachable(exc):
    """The database error behind ``exc`` (itself, or one it was raised from or while
    handling: Optuna may fail again while recording a trial on a server that has gone),
    else None."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, _UNREACHABLE):
            inner = exc.__cause__ or exc.__context__  # StorageInternalError wraps the driver's
            if isinstance(exc, optuna.exceptions.StorageInternalError) and inner is not None:
                return _unreachable(inner) or exc
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


@contextlib.contextmanager
def _storage_errors(url):
    """A database that stopped or refused, as StorageUnavailableError with the way on."""
    try:
        yield
    except Exception as exc:
        cause = _unreachable(exc)
        if cause is None:
            raise
        detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        raise StorageUnavailableError(
            f"the study's storage {_shown(url)} cannot be used "
            f"({detail[0] if detail else type(cause).__name__}): every finished trial is kept "
            "there; when it is back, run the same call again to continue the study") from None


class _StorageLock:
    """A lock that every process using the storage at ``url`` shares, one per ``key`` (on
    PostgreSQL; a SQLite file has one lock). SQLite: ``flock`` on ``<database>.lock``;
    PostgreSQL: a session advisory lock on a connection of its own; in memory: nothing to
    share. ``acquire``/``release`` (idempotent), or ``with``; ``close`` ends the connection."""

    def __init__(self, url, key: str):
        self.url, self.held = url, False
        self._fd = self._engine = self._conn = None
        self._path = self._pg = None
        u = None if url is None else _parse_url(url)
        if u is None:
            return
        if u.get_backend_name() == "sqlite":
            db = u.database
            if db and db != ":memory:" and not db.startswith("file:") and fcntl is not None:
                self._path = str(Path(db).expanduser()) + ".lock"
        else:
            self._pg = u
            digest = hashlib.blake2b(f"accel.search/{key}".encode(), digest_size=8).digest()
            self._key = int.from_bytes(digest, "little", signed=True)

    def acquire(self) -> None:
        if self.held:
            return
        if self._path is not None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        elif self._pg is not None:
            if self._conn is None:
                self._engine = sqlalchemy.create_engine(
                    self._pg, poolclass=sqlalchemy.pool.NullPool)
                self._conn = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock
        elif self._conn is not None:
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                               {"k": self._key})

    def close(self) -> None:
        try:
            self.release()
        finally:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    conn.close()
                self._engine.dispose()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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
    if not (callable(getattr(trial, "report", None)) and callable(
            getattr(trial, "should_prune", None))):
        raise TypeError(f"trial must be an Optuna trial (the objective's second argument), got "
                        f"{trial!r}")
    checks.one_of("metric", metric, METRICS)
    if isinstance(keep, str) or not isinstance(keep, (list, tuple)):
        raise TypeError(f"keep must be a list of History names {METRICS}, got {keep!r}")
    for i, k in enumerate(keep):
        checks.one_of(f"keep[{i}]", k, METRICS)

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
    _check_trials([trial], "trial")
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


def _check_trials(trials, name="trials") -> list:
    """A list of Optuna FrozenTrials (TypeError naming ``name`` otherwise)."""
    try:
        if isinstance(trials, (str, bytes, dict)):
            raise TypeError
        trials = list(trials)
    except TypeError:
        raise TypeError(f"{name} must be a list of Optuna FrozenTrials, got "
                        f"{trials!r:.200}") from None
    for i, t in enumerate(trials):
        if not isinstance(t, optuna.trial.FrozenTrial):
            what = name if name == "trial" else f"{name}[{i}]"
            raise TypeError(f"{what} must be an Optuna FrozenTrial, got {t!r:.200}")
    return trials


def rank(trials, maximize: bool = True) -> list:
    """Complete trials best first, then pruned ones by their last report, then the rest."""
    checks.boolean("maximize", maximize)
    return sorted(_check_trials(trials), key=lambda tr: _rank_key(tr, maximize))


def narrow(space: dict, trials, top: int, maximize: bool = True, margin: float = 0.0) -> dict:
    """A new space whose every range just spans the values of the ``top`` best complete
    trials (for a log range, from the smallest to the largest value: the same span in
    decades), widened by ``margin`` of that width on each side (in the sampling scale) and
    kept inside the old range. A categorical keeps the choices the best trials took."""
    _check_space(space)
    checks.integer("top", top, low=1)
    checks.number("margin", margin, low=0)
    best = [tr for tr in rank(trials, maximize)[:top] if _rank_key(tr, maximize)[0] == 0]
    if not best:
        raise ValueError(f"trials holds no complete trial with a score to narrow around "
                         f"({len(list(trials))} trials)")
    out = {}
    for k, d in space.items():
        missing = [tr.number for tr in best if k not in tr.params]
        if missing:
            raise ValueError(f"trials {missing} have no parameter {k!r} of the space (trials "
                             "of another space?)")
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


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Objective:
    """Optuna's objective(trial) around the user's objective(params, trial). The study lock
    (held while the trial was started) is let go while the objective runs and taken again for
    Optuna to record its result."""

    def __init__(self, objective, space, lock):
        self.objective, self.space, self.lock = objective, space, lock

    def __call__(self, trial):
        # Still under the study lock: the trial's first heartbeat, then the mark that it
        # started. A worker that dies from here on leaves a trial whose heartbeat stops (and
        # is retried); one that died since its trial was created leaves a trial without the
        # mark, which the next worker to hold the lock retries (_retry_unstarted).
        _first_heartbeat(trial)
        trial.set_user_attr("started", trial.number)
        trial.set_user_attr("worker", _worker_name())
        self.lock.release()
        try:
            params = suggest(trial, self.space)
            out = self.objective(params, trial)
            score, info = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
            try:  # a number, a NumPy scalar or a 0-d array (not a bool, not a string)
                if isinstance(score, (bool, str, bytes)):
                    raise TypeError
                score = float(score)
            except (TypeError, ValueError):
                raise TypeError(f"the objective must return a number or (number, info dict), "
                                f"got {out!r:.200}") from None
            if info is not None and not isinstance(info, dict):
                raise TypeError(f"the objective's info must be a dict, got {info!r:.200}")
            for k, v in (info or {}).items():
                trial.set_user_attr(k, v)
            if math.isnan(score):  # Optuna marks the trial FAIL; counted against max_failed
                trial.set_user_attr("fail_reason", "the objective returned nan")
            return score
        finally:
            self.lock.acquire()


def _first_heartbeat(trial) -> None:
    """Record the trial's first heartbeat now, not when Optuna's heartbeat thread first runs:
    a trial without any heartbeat is never found stale."""
    store = getattr(trial, "storage", None)
    if getattr(store, "heartbeat_interval", None) and hasattr(trial, "_trial_id"):
        store.record_heartbeat(trial._trial_id)


def _retry_unstarted(study) -> None:
    """Fail and re-queue (as a stale trial is) every running trial that never started: its
    worker died between creating it and starting its objective. Called under the study lock,
    which a live worker holds through that whole interval, so such a trial is a dead one."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("started") == t.number:
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        with _quiet():
            _retry_callback()(study, t)


def _retry_callback(max_retry: int | None = MAX_RETRY):
    """What a trial that lost its worker gets: re-queued with its parameters (at most
    ``max_retry`` times)."""
    with _quiet():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def _counts(study) -> dict:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def _failed(study, first: int) -> list:
    """The trials numbered ``first`` on that failed because of the objective's value (not the
    trials of a dead worker, which are retried)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.number >= first and "fail_reason" in t.user_attrs]


def _check_failed(study, first: int, max_failed: int) -> None:
    failed = _failed(study, first)
    if len(failed) > max_failed:
        last = failed[-1]
        raise TrialsFailedError(
            f"study {study.study_name!r}: {len(failed)} trials failed in this run, more than "
            f"max_failed={max_failed} (trial {last.number}: {last.user_attrs['fail_reason']},"
            f" params {last.params}); fix the objective (it must return a number, not NaN); "
            "the finished trials are kept, and the same call continues the study")


def _study_lock(how) -> _StorageLock:
    return _StorageLock(how["storage_url"], f"study/{how['study_name']}")


def _work(how, objective, space, n_trials, poll=0.5, blas_threads=None, max_failed=None,
          first=0, study=None):
    """One worker: run trials of the study ``how`` describes (see :func:`_load`;
    ``study`` when this process already has it) until n_trials of them are complete or
    pruned. Its bookkeeping holds the study lock: failing stale trials (each is re-queued by
    exactly one worker), counting, starting a trial and recording its result."""
    url = how["storage_url"]
    with contextlib.ExitStack() as stack:
        if blas_threads:
            from .threads import blas_threads as limit

            stack.enter_context(limit(blas_threads))
        stack.enter_context(_storage_errors(url))
        if study is None:  # a spawned worker
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = _load(how)
        lock = _study_lock(how)
        stack.callback(lock.close)
        wrapped = _Objective(objective, space, lock)
        while True:
            lock.acquire()
            try:
                with _quiet():
                    optuna.storages.fail_stale_trials(study)
                _retry_unstarted(study)
                c = _counts(study)
                done = sum(c[s] for s in DONE)
                if done >= n_trials:
                    return study
                _check_failed(study, first, n_trials if max_failed is None else max_failed)
                if c[TrialState.WAITING] or done + c[TrialState.RUNNING] < n_trials:
                    # one trial at a time: the check above runs before each (MaxTrialsCallback
                    # would let each worker start one more trial after the last place is taken)
                    try:
                        with _quiet():
                            study.optimize(wrapped, n_trials=1)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        pass  # its heartbeat was late: failed and re-queued by another worker
                    continue
            finally:
                lock.release()
            time.sleep(poll)  # every place is taken by a running trial (its worker may die)


def _worker_main(how, *args):
    """A spawned worker: the errors run_study reports itself end it with one line, status 3."""
    try:
        _work(how, *args)
    except (TrialsFailedError, StorageUnavailableError) as exc:
        print(f"accel.search worker {_worker_name()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


def _load(how, store=None):
    """The study ``how`` describes (created when it does not exist), in ``store`` or a
    storage of its own."""
    if store is None:
        store = storage(how["storage_url"], **how["storage_kwargs"])
    return optuna.create_study(
        study_name=how["study_name"], storage=store,
        sampler=sampler(how["sampler_name"], how["seed"]),
        pruner=pruner(how["pruner_name"], **how["pruner_kwargs"]),
        direction=how["direction"], load_if_exists=True)


def _json(name: str, value):
    """``value`` as it reads back from a study's JSON attributes (TypeError naming it)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must hold JSON data (str, numbers, lists, dicts), got "
                        f"{value!r:.200} ({exc})") from None


def _check_attrs(study, attrs: dict) -> None:
    """Keep ``attrs`` (what the trials depend on: space, settings) in the study; refuse to
    continue a study made with other ones."""
    for k, v in attrs.items():
        v = _json(f"attrs[{k!r}]", v)
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
              attrs: dict | None = None, max_failed: int | None = None) -> optuna.Study:
    """Run (or continue) the study ``study_name`` in ``storage_url`` until exactly
    ``n_trials`` of its trials are complete or pruned, with ``workers`` processes.

    ``objective(params, trial) -> score`` or ``-> (score, info)``; ``params`` is drawn from
    ``space``; ``info`` is kept in the trial's user attributes; ``trial`` is for
    :func:`pruning_hook`. With ``workers > 1`` (spawned processes) the objective must be
    picklable and ``storage_url`` an RDB URL; ``blas_threads`` limits each worker's BLAS.
    More workers on other machines join by running the same call on the same URL.

    The study stores its settings: the space, ``direction``, ``sampler_name``, ``seed``,
    ``pruner_name`` and ``pruner_kwargs``, and ``attrs`` (JSON values: whatever else the
    trials depend on). A call with other ones, or with ``n_trials`` below the trials the
    study already has, is refused (ValueError naming the setting). A trial whose objective
    returns NaN fails and another is drawn; more than ``max_failed`` (default ``n_trials``)
    such failures in one call raise TrialsFailedError. A database that stops answering raises
    StorageUnavailableError: the same call, run again, continues the study."""
    if isinstance(objective, type) or not callable(objective):
        raise TypeError(f"objective must be a function objective(params, trial), got "
                        f"{objective!r:.200}")
    _check_space(space)
    checks.integer("n_trials", n_trials, low=1)
    checks.integer("workers", workers, low=1)
    checks.optional(checks.integer, "max_failed", max_failed, low=0)
    checks.optional(checks.integer, "blas_threads", blas_threads, low=1, high=2**31 - 1)
    checks.positive("poll", poll)
    direction = checks.one_of("direction", direction, DIRECTIONS)
    if not isinstance(study_name, str) or not study_name:
        raise TypeError(f"study_name must be a non-empty string, got {study_name!r}")
    if pruner_kwargs is not None and not isinstance(pruner_kwargs, dict):
        raise TypeError(f"pruner_kwargs must be a dict, got {pruner_kwargs!r}")
    if attrs is not None and not isinstance(attrs, dict):
        raise TypeError(f"attrs must be a dict of JSON values, got {attrs!r}")
    checks.one_of("sampler_name", sampler_name, SAMPLERS)
    if pruner_name is not None:
        checks.one_of("pruner_name", pruner_name, PRUNERS)
    sampler(sampler_name, seed)  # their checks, now rather than in each worker
    try:
        pruner(pruner_name, **(pruner_kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"pruner_kwargs={pruner_kwargs!r:.200}: {exc}") from None
    checks.integer("heartbeat_interval", heartbeat_interval, low=1)
    checks.optional(checks.integer, "grace_period", grace_period, low=1)
    if storage_url is not None:
        _parse_url(storage_url, "storage_url")
    if workers > 1:
        if storage_url is None or ":memory:" in storage_url or \
                storage_url.rstrip("/") == "sqlite:":
            raise ValueError(f"workers={workers} share the study through a storage: pass "
                             "storage_url (e.g. 'sqlite:///search.db')")
        try:
            pickle.dumps(objective)
        except Exception as exc:
            raise TypeError(f"objective must be picklable to run in worker processes "
                            f"(workers={workers}): {exc}") from None
    how = dict(study_name=study_name, storage_url=storage_url, sampler_name=sampler_name,
               seed=seed, pruner_name=pruner_name, pruner_kwargs=dict(pruner_kwargs or {}),
               direction=direction,
               storage_kwargs={"heartbeat_interval": heartbeat_interval,
                               "grace_period": grace_period})
    settings = {"sampler": sampler_name, "seed": seed, "pruner": pruner_name,
                "pruner_kwargs": how["pruner_kwargs"]}
    space_json = {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}
    with _storage_errors(storage_url):
        store = storage(storage_url, **how["storage_kwargs"])
    with _storage_errors(storage_url), _study_lock(how):
        study = _load(how, store)  # created here once, before any worker races to
        if study.direction != StudyDirection[direction.upper()]:
            raise ValueError(f"study {study_name!r} in this storage is run to "
                             f"{study.direction.name.lower()}, not direction={direction!r}: "
                             "pass another study name to start anew")
        _check_attrs(study, {"space": space_json, "search_settings": settings,
                             **(attrs or {})})
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in DONE for t in trials)
        if done > n_trials:
            raise ValueError(f"study {study_name!r} in this storage already has {done} "
                             f"complete or pruned trials, more than n_trials={n_trials}: "
                             f"pass n_trials >= {done} to continue it, or another study name")
        first = len(trials)
    max_failed = n_trials if max_failed is None else max_failed
    args = (objective, space, n_trials, poll, blas_threads, max_failed, first)
    if workers == 1:
        return _work(how, *args, study=study)
    # spawn, not fork: safe with thread pools and CUDA contexts already in this process
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(how, *args), name=f"search-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    with _storage_errors(storage_url):
        _check_failed(study, first, max_failed)
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
                if t.state in (*DONE, TrialState.FAIL)
                and not t.user_attrs.get("surplus")]  # studies run by accel 0.3 had them

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
    """A distribution as JSON-ready data: {"kind", "low", "high", "log"} or {"choices"}."""
    if not isinstance(d, (FloatDistribution, IntDistribution, CategoricalDistribution)):
        raise TypeError(f"d must be an Optuna distribution, got {d!r:.200}")
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
    space = _check_space(BOOK_SPACE if space is None else space)
    checks.boolean("maximize", maximize)
    checks.number("margin", margin, low=0)
    checks.optional(checks.integer, "narrow_top", narrow_top, low=1)
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
