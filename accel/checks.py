"""Argument checks shared by every public entry point.

Each raises ValueError or TypeError whose message names the argument and the value.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .backend import array_module


def positive(name: str, value, *, integer: bool = False):
    """``value`` > 0 (and an int when ``integer``)."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be a positive int, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def seed(name: str, value):
    """None or an int >= 0 (what every generator in accel accepts as a seed)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
    return int(value)


def non_negative(name: str, value):
    """``value`` >= 0 and finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def in_unit_interval(name: str, value):
    """0 <= ``value`` < 1 (a probability that is not certain: betas, decay rates, dropout)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def one_of(name: str, value, choices):
    """``value`` in ``choices`` (strings compared case-insensitively)."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"{name}={value!r} is not one of {sorted(choices)}")
    return key


def floating_dtype(name: str, dtype):
    """``dtype`` as float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}={dtype!r} is not a dtype") from exc
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def array(name: str, a, *, ndim=None, dtype=None, finite: bool = True):
    """An array of floats, checked for rank and NaN/Inf; returns it (cast to ``dtype``)."""
    xp = array_module(a)
    if not hasattr(a, "dtype"):
        a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if ndim is not None and a.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have ndim {ndim}, got shape {tuple(a.shape)}")
    if a.ndim and a.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
    if dtype is not None and a.dtype != dtype:
        if a.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {a.dtype} (convert it first)")
        a = a.astype(dtype)
    if finite and a.dtype.kind == "f" and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def labels(name: str, t, n: int, n_classes: int):
    """Integer class ids of shape (n,) in [0, n_classes), or one-hot of shape (n, n_classes)."""
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if t.ndim == 2 and t.shape == (n, n_classes):
        return t
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(
            f"{name} must be class ids of shape ({n},) or one-hot of shape ({n}, {n_classes}),"
            f" got shape {tuple(t.shape)}"
        )
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} class ids must be integers, got dtype {t.dtype}")
    if n:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains class id {bad}, outside [0, {n_classes})")
    return t
