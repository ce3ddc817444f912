"""Random hyperparameter search: log-uniform sampling and range narrowing.

The book (§6.5) and the course (week 3) both tune by sampling at random on a log scale,
lr = 10^U(−6, −2) rather than U(1e-6, 1e-2), looking at the best trials, and sampling again
inside the range they span::

    from accel import search

    space = {"lr": search.LogUniform(1e-6, 1e-2),
             "weight_decay": search.LogUniform(1e-8, 1e-4)}
    result = search.random_search(objective, space, n_trials=100, seed=0,
                                  rounds=2, narrow_top=10)
    result.best.params                  # {"lr": ..., "weight_decay": ...}
    result.ranked()[:5]                 # the five best trials, best first

``objective(params) -> score`` (higher is better, e.g. validation accuracy; pass
``maximize=False`` for a loss) or ``-> (score, info)`` with ``info`` any dict kept in the
trial. ``map=`` runs the objectives of a round through any ``map``-like function, e.g.
``concurrent.futures.ProcessPoolExecutor().map`` for parallel trials. Parameters are
sampled in the parent process from one seeded generator, so a search is reproducible
however it is run.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LogUniform", "Uniform", "Choice", "sample", "narrow", "Trial", "SearchResult",
           "random_search"]


def _finite(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


class Uniform:
    """low + (high − low)·U(0, 1)."""

    log = False

    def __init__(self, low, high):
        self.low, self.high = _finite("low", low), _finite("high", high)
        if not self.low <= self.high:
            raise ValueError(f"need low <= high, got low={low!r}, high={high!r}")

    def _to(self, v):
        return v

    def _from(self, u):
        return u

    def sample(self, rng, size=None):
        a, b = self._to(self.low), self._to(self.high)
        return self._from(rng.uniform(a, b, size))

    def narrowed(self, values, margin: float = 0.0):
        """The same kind of range spanning ``values`` (widened by ``margin`` of its width on
        each side, in the sampling scale, and clipped to this range)."""
        vals = [self._to(_finite("value", v)) for v in values]
        if not vals:
            raise ValueError("narrowed() needs at least one value")
        a, b = min(vals), max(vals)
        pad = margin * (b - a)
        lo = max(a - pad, self._to(self.low))
        hi = min(b + pad, self._to(self.high))
        return type(self)(self._from(lo), self._from(hi))

    def __contains__(self, v) -> bool:
        return self.low <= v <= self.high

    def __eq__(self, other):
        return type(self) is type(other) and (self.low, self.high) == (other.low, other.high)

    def __repr__(self):
        return f"{type(self).__name__}({self.low:g}, {self.high:g})"

    def to_dict(self):
        return {"kind": type(self).__name__, "low": self.low, "high": self.high}


class LogUniform(Uniform):
    """10^U(log10 low, log10 high): every decade between low and high equally likely."""

    log = True

    def __init__(self, low, high):
        super().__init__(low, high)
        if self.low <= 0:
            raise ValueError(f"LogUniform needs low > 0, got {low!r}")

    def _to(self, v):
        return math.log10(v)

    def _from(self, u):
        return 10.0 ** u

    @classmethod
    def exponents(cls, lo, hi):
        """10^U(lo, hi), the book's notation: ``LogUniform.exponents(-6, -2)``."""
        return cls(10.0 ** lo, 10.0 ** hi)


class Choice:
    """One of a fixed list of values, equally likely."""

    log = False

    def __init__(self, values):
        self.values = list(values)
        if not self.values:
            raise ValueError("Choice needs at least one value")

    def sample(self, rng, size=None):
        i = rng.integers(len(self.values), size=size)
        if size is None:
            return self.values[int(i)]
        return [self.values[int(j)] for j in np.ravel(i)]

    def narrowed(self, values, margin: float = 0.0):
        kept = [v for v in self.values if v in list(values)]
        return Choice(kept or self.values)

    def __contains__(self, v) -> bool:
        return v in self.values

    def __eq__(self, other):
        return type(self) is type(other) and self.values == other.values

    def __repr__(self):
        return f"Choice({self.values!r})"

    def to_dict(self):
        return {"kind": "Choice", "values": self.values}


def _check_space(space):
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict of name → LogUniform/Uniform/Choice")
    for k, d in space.items():
        if not hasattr(d, "sample") or not hasattr(d, "narrowed"):
            raise TypeError(f"space[{k!r}] = {d!r} is not a LogUniform, Uniform or Choice")
    return space


def sample(space: dict, rng) -> dict:
    """One point of ``space``: {name: value}, each drawn from its distribution."""
    _check_space(space)
    out = {}
    for k, d in space.items():
        v = d.sample(rng)
        out[k] = float(v) if isinstance(v, (float, np.floating)) else v
    return out


@dataclass
class Trial:
    """One evaluated point: its parameters, score, round, index and whatever the objective
    returned beside the score (``info``)."""

    params: dict
    score: float
    round: int = 0
    index: int = 0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"index": self.index, "round": self.round, "params": self.params,
                "score": self.score, "info": self.info}


def _key(trial, maximize):
    s = trial.score
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return math.inf  # failed / NaN trials rank last
    return -s if maximize else s


def rank(trials, maximize: bool = True) -> list:
    """The trials best first (NaN scores last; ties keep their order)."""
    return sorted(trials, key=lambda tr: _key(tr, maximize))


def narrow(space: dict, trials, top: int, maximize: bool = True, margin: float = 0.0) -> dict:
    """A new space whose every range just spans the values of the ``top`` best trials
    (in the sampling scale: for a LogUniform, from the smallest to the largest exponent),
    widened by ``margin`` of the width on each side and kept inside the old range."""
    _check_space(space)
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    best = [tr for tr in rank(trials, maximize)[:top] if _key(tr, maximize) != math.inf]
    if not best:
        raise ValueError("no trial with a score to narrow around")
    return {k: d.narrowed([tr.params[k] for tr in best], margin) for k, d in space.items()}


@dataclass
class SearchResult:
    """Every trial of a search, the spaces of its rounds, and the ranking."""

    trials: list
    spaces: list
    maximize: bool = True

    def ranked(self) -> list:
        return rank(self.trials, self.maximize)

    @property
    def best(self) -> Trial:
        return self.ranked()[0]

    def round(self, r: int) -> list:
        return [tr for tr in self.trials if tr.round == r]

    def to_dict(self) -> dict:
        return {"maximize": self.maximize,
                "spaces": [{k: d.to_dict() for k, d in s.items()} for s in self.spaces],
                "trials": [tr.to_dict() for tr in self.trials],
                "ranking": [tr.index for tr in self.ranked()]}


def _call(objective, params):
    out = objective(params)
    if isinstance(out, tuple):
        score, info = out
    else:
        score, info = out, {}
    return float(score), dict(info or {})


def random_search(objective, space: dict, n_trials: int, seed=None, *, rounds: int = 1,
                  narrow_top: int | None = None, margin: float = 0.0, maximize: bool = True,
                  map=map, callback=None) -> SearchResult:
    """Random search over ``space``: ``n_trials`` trials per round; after each round but the
    last the space is narrowed to the ``narrow_top`` best trials so far (required when
    ``rounds > 1``). ``callback(trial)`` is called as each trial finishes."""
    _check_space(space)
    for name, v in (("n_trials", n_trials), ("rounds", rounds)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if rounds > 1 and narrow_top is None:
        raise ValueError("rounds > 1 needs narrow_top (how many best trials set the range)")
    rng = np.random.default_rng(seed)
    trials, spaces = [], []
    for r in range(rounds):
        if r:
            space = narrow(space, trials, narrow_top, maximize, margin)
        spaces.append(space)
        points = [sample(space, rng) for _ in range(n_trials)]
        wrapped = _Objective(objective)
        for params, (score, info) in zip(points, map(wrapped, points)):
            tr = Trial(params, score, r, len(trials), info)
            trials.append(tr)
            if callback is not None:
                callback(tr)
    return SearchResult(trials, spaces, maximize)


class _Objective:
    """objective(params) → (score, info); picklable when the objective is."""

    def __init__(self, objective):
        self.objective = objective

    def __call__(self, params):
        return _call(self.objective, params)
