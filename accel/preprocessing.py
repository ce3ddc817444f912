"""Preprocessing on NumPy or CuPy arrays: standardization, PCA/ZCA whitening, one-hot labels,
shuffling, a train/validation split and the course's mini-batch partition.

Statistics are fitted on the training set only and reused, unchanged, on validation and test
data (fitting them on the test set leaks it into the model). Every function works on the
arrays' own backend (``accel.array_module``).
"""

from __future__ import annotations

import numpy as np

from . import checks
from .backend import array_module

__all__ = ["Standardizer", "PCAWhitening", "one_hot", "shuffle", "train_val_split",
           "minibatches", "minibatch_partition", "batch_bounds"]


def _as_float(name: str, x, *, min_rows: int = 1):
    """``x`` as a float array with samples on axis 0 (integers cast to float64)."""
    return checks.array(name, x, min_ndim=2, min_rows=min_rows, integers="cast")


def _check_fitted(obj, attr: str):
    if getattr(obj, attr) is None:
        raise RuntimeError(f"{type(obj).__name__} is not fitted yet: call fit(x_train) first")


def _check_features(name: str, x, shape):
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} has feature shape {tuple(x.shape[1:])}, but the fit was on "
                         f"feature shape {tuple(shape)}")


class Standardizer:
    """Per-feature standardization z = (x − μ) / σ with μ, σ of the training set.

    ``fit(x_train)`` computes μ and σ over axis 0 (the samples; any trailing shape is the
    feature shape); ``transform`` applies those same μ, σ to any data (train, validation,
    test). A feature whose training σ is <= ``eps`` (constant, like MNIST's border pixels)
    is only centred (σ taken as 1), so it neither divides by zero nor blows up on test data.
    Statistics are accumulated in float64; outputs keep the input's float dtype.
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = checks.number("eps", eps, low=0)
        self.mean_ = None
        self.std_ = None

    def fit(self, x):
        x = _as_float("x", x)
        x64 = x.astype(np.float64)
        xp = array_module(x64)
        # In units of each feature's largest |x|: the squares of data near 1e200 (or sums of
        # data near 1e304) would overflow float64 and make σ infinite.
        scale = xp.abs(x64).max(axis=0)
        scale = xp.where(scale > 0, scale, 1.0)
        unit = x64 / scale
        mean = unit.mean(axis=0) * scale
        std = unit.std(axis=0) * scale
        self.mean_ = mean
        self.std_ = xp.where(std > self.eps, std, 1.0)
        return self

    def transform(self, x):
        _check_fitted(self, "mean_")
        x = _as_float("x", x)
        _check_features("x", x, self.mean_.shape)
        return ((x - self.mean_.astype(x.dtype)) / self.std_.astype(x.dtype)).astype(x.dtype)

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def inverse_transform(self, z):
        _check_fitted(self, "mean_")
        z = _as_float("z", z)
        _check_features("z", z, self.mean_.shape)
        return (z * self.std_.astype(z.dtype) + self.mean_.astype(z.dtype)).astype(z.dtype)


class PCAWhitening:
    """PCA whitening (or ZCA with ``zca=True``), fitted on the training set.

    With the training covariance Σ = U diag(λ) Uᵀ (biased, 1/n), PCA whitening maps
    x ↦ (x − μ) U_k diag(1/√(λ_k + eps)) onto the ``n_components`` leading components
    (all when None); ZCA further rotates back by U_kᵀ, staying close to the input (and
    keeping all components). The whitened training data has covariance diag(λ/(λ + eps)),
    the identity up to ``eps``, which keeps near-zero-variance directions from exploding.
    Inputs of any rank are flattened to (n_samples, n_features).
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-5, zca: bool = False):
        checks.optional(checks.integer, "n_components", n_components, low=1)
        checks.boolean("zca", zca)
        if zca and n_components is not None:
            raise ValueError("zca=True keeps every component; leave n_components=None")
        self.n_components = n_components
        self.eps = checks.number("eps", eps, low=0)
        self.zca = checks.boolean("zca", zca)
        self.mean_ = None
        self.components_ = None  # (n_features, k), columns = principal directions
        self.variances_ = None  # (k,), eigenvalues of the covariance, descending
        self._w = None

    def fit(self, x):
        x = _as_float("x", x, min_rows=2)
        x = x.reshape(len(x), -1).astype(np.float64)
        n, d = x.shape
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise ValueError(f"n_components={k} exceeds the number of features {d}")
        xp = array_module(x)
        self.mean_ = x.mean(axis=0)
        xc = x - self.mean_
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
            cov = xc.T @ xc / n
        if not bool(xp.isfinite(cov).all()):
            big = float(xp.abs(x).max())
            raise ValueError(f"x is too large to whiten in float64: its covariance overflows "
                             f"(|x| up to {big:.3g}); scale it first, e.g. with Standardizer")
        lam, u = xp.linalg.eigh(cov)  # ascending
        order = xp.argsort(lam)[::-1][:k]
        lam = xp.clip(lam[order], 0.0, None)
        u = u[:, order]
        self.components_ = u
        self.variances_ = lam
        if self.eps == 0 and not bool((lam > 1e-12 * max(float(lam[0]), 1e-300)).all()):
            raise ValueError("the training covariance is singular; use eps > 0 or fewer "
                             "n_components")
        w = u / xp.sqrt(lam + self.eps)
        self._w = w @ u.T if self.zca else w
        return self

    def transform(self, x):
        _check_fitted(self, "_w")
        x = _as_float("x", x)
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"x has {flat.shape[1]} features, but the fit was on "
                             f"{self.mean_.shape[0]}")
        return ((flat - self.mean_.astype(x.dtype)) @ self._w.astype(x.dtype)).astype(x.dtype)

    def fit_transform(self, x):
        return self.fit(x).transform(x)


def one_hot(t, n_classes: int, dtype=np.float32):
    """Integer class ids ``t`` of shape (n,) as one-hot rows of shape (n, n_classes)."""
    checks.integer("n_classes", n_classes, low=1)
    dtype = checks.dtype("dtype", dtype)
    xp = array_module(t)
    t = checks.class_ids("t", t, n_classes)
    try:
        out = xp.zeros((t.shape[0], n_classes), dtype=dtype)
    except (ValueError, MemoryError) as exc:
        raise ValueError(f"n_classes={n_classes} one-hot rows of {t.shape[0]} samples do not "
                         f"fit in memory ({exc})") from None
    out[xp.arange(t.shape[0]), t] = 1
    return out


def _pair(x, t):
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    if t is not None:
        if not hasattr(t, "shape"):
            t = np.asarray(t)
        if t.ndim == 0 or x.ndim == 0 or t.shape[0] != x.shape[0]:
            raise ValueError(f"x and t must have the same number of samples, got shapes "
                             f"{tuple(x.shape)} and {tuple(t.shape)}")
    elif x.ndim == 0:
        raise ValueError(f"x must have a samples axis, got shape {tuple(x.shape)}")
    return x, t


def _permutation(n: int, seed, xp):
    """A permutation of range(n) from a NumPy generator, so it is the same on every backend."""
    perm = checks.host_rng("seed", seed).permutation(n)
    return perm if xp is np else xp.asarray(perm)


def shuffle(x, t=None, seed=None):
    """``x`` (and ``t``) reordered by one random permutation of the samples (copies).

    Returns ``(x, t)`` when ``t`` is given, else ``x``.
    """
    x, t = _pair(x, t)
    xp = array_module(x)
    perm = _permutation(x.shape[0], seed, xp)
    return (x[perm], t[perm]) if t is not None else x[perm]


def train_val_split(x, t, val_fraction: float = 0.2, seed=None, shuffle: bool = True):
    """Hold out ``val_fraction`` of the samples for validation.

    Returns ``(x_train, t_train), (x_val, t_val)``; the validation part has
    round(val_fraction·n) samples (at least 1, and at least one sample stays for training),
    drawn at random (seeded) unless ``shuffle=False`` (then it is the tail).
    """
    x, t = _pair(x, t)
    if t is None:
        raise ValueError("t must be given (labels to split along with x)")
    checks.fraction("val_fraction", val_fraction)
    n = x.shape[0]
    n_val = int(round(val_fraction * n))
    if n_val < 1 or n_val > n - 1:
        raise ValueError(f"val_fraction={val_fraction} of {n} samples leaves "
                         f"{n_val} for validation and {n - n_val} for training; both need >= 1")
    xp = array_module(x)
    idx = _permutation(n, seed, xp) if checks.boolean("shuffle", shuffle) else xp.arange(n)
    tr, va = idx[: n - n_val], idx[n - n_val:]
    return (x[tr], t[tr]), (x[va], t[va])


def batch_bounds(n: int, batch_size: int, min_last: int = 1) -> list:
    """``[(start, stop), ...]`` cutting ``n`` samples into batches of ``batch_size`` and one
    partial last batch; a last batch of fewer than ``min_last`` samples is merged into the
    batch before it (so that batch has up to batch_size + min_last − 1 samples).

    ``min_last=2`` is what a BatchNorm network needs (the variance of one sample is 0): with
    5 samples and batch_size 2 the batches are 2 and 3 samples, not 2, 2 and 1."""
    checks.integer("n", n, low=1)
    checks.integer("batch_size", batch_size, low=1)
    checks.integer("min_last", min_last, low=1)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()  # the short tail joins the batch before it
    return [(a, starts[i + 1] if i + 1 < len(starts) else n) for i, a in enumerate(starts)]


def minibatch_partition(n: int, batch_size: int, seed=None, *, min_last: int = 1):
    """``(order, bounds)``: one random permutation of range(n) (a NumPy array, drawn from the
    NumPy generator ``seed``: None, an int, or a Generator, which advances) and the batches
    it is cut into (``batch_bounds``): batch k is ``order[start:stop]`` of ``bounds[k]``.

    The one implementation of shuffle-then-partition: ``minibatches`` and ``accel.Trainer``
    (which draws each epoch's order from its own generator) both use it."""
    bounds = batch_bounds(n, batch_size, min_last)  # checks n and batch_size first
    order = checks.host_rng("seed", seed).permutation(n)
    return order, bounds


def minibatches(x, t, batch_size: int, seed=None, *, min_last: int = 1) -> list:
    """The course's ``random_mini_batches``: shuffle the samples of ``x`` and ``t`` by one
    permutation (NumPy generator ``seed``), then cut them into ⌊n/batch_size⌋ full batches
    and one partial last batch of the remaining n mod batch_size samples.

    Returns ``[(x_batch, t_batch), ...]`` (copies, on the arrays' backend; ``t=None`` gives
    ``[x_batch, ...]``). A last batch of fewer than ``min_last`` samples is merged into the
    one before it: pass ``min_last=2`` for a BatchNorm network, as ``accel.Trainer`` does
    (a batch of one sample has no variance). ``Trainer(..., seed=s)``'s first epoch trains
    on exactly ``minibatches(x, t, batch_size, seed=s, min_last=...)``."""
    x, t = _pair(x, t)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    order, bounds = minibatch_partition(x.shape[0], batch_size, seed, min_last=min_last)
    xp = array_module(x)
    order = order if xp is np else xp.asarray(order)
    if t is None:
        return [x[order[a:b]] for a, b in bounds]
    return [(x[order[a:b]], t[order[a:b]]) for a, b in bounds]
