"""Argument checks shared by every public entry point: the one place where input is judged.

Each raises TypeError (wrong kind of value) or ValueError (right kind, wrong value) whose
message names the argument and the value, and returns the value as it should be used.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from .backend import array_module

# -- scalars


def integer(name: str, value, *, low=None, high=None) -> int:
    """An int (never a bool) with low <= value <= high (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {_range(low, high, False, False)}, got {value!r}")
    return int(value)


def number(name: str, value, *, low=None, high=None, open_low=False, open_high=False) -> float:
    """A finite real number (never a bool) in the interval from low to high (closed unless
    ``open_low``/``open_high``; either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value > low if open_low else value >= low)
    if high is not None:
        ok = ok and (value < high if open_high else value <= high)
    if not ok:
        raise ValueError(f"{name} must be {_range(low, high, open_low, open_high)}, "
                         f"got {value!r}")
    return float(value)


def _range(low, high, open_low, open_high) -> str:
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {low:g}"
    if high is not None:
        return f"{'<' if open_high else '<='} {high:g}"
    return "a finite number"


def positive(name: str, value, *, integer: bool = False):
    """``value`` > 0 (and an int when ``integer``)."""
    kind = "int" if integer else "number"
    if isinstance(value, bool) or not isinstance(
            value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{name} must be a positive {kind}, got {value!r}")
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return int(value) if integer else value


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


def fraction(name: str, value) -> float:
    """0 < ``value`` < 1 (a share of the samples: a validation or test fraction)."""
    return number(name, value, low=0, high=1, open_low=True, open_high=True)


def boolean(name: str, value) -> bool:
    """True or False (NumPy's bools too; not 0/1, not strings)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def path(name: str, value):
    """A file or folder path: str or os.PathLike (not bytes, not a number)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), got {value!r:.200}")
    if "\0" in os.fspath(value):
        raise ValueError(f"{name}={value!r:.200} contains a null byte")
    return value


def callable_(name: str, value):
    """A function (or another callable object)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r:.200}")
    return value


def optional(check, name: str, value, **kwargs):
    """None, or ``check(name, value, **kwargs)``."""
    return None if value is None else check(name, value, **kwargs)


def one_of(name: str, value, choices):
    """``value`` in ``choices`` (strings compared case-insensitively; None only when it is
    one of the choices)."""
    key = value.lower() if isinstance(value, str) else value
    if not (isinstance(key, str) or key is None) or key not in choices:
        shown = sorted(choices, key=str)
        raise ValueError(f"{name}={value!r:.200} is not one of {shown}")
    return key


# -- random generators


def seed(name: str, value):
    """None or an int >= 0 (what every generator in accel accepts as a seed)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be None or an int >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
    return int(value)


def host_rng(name: str, value) -> np.random.Generator:
    """A NumPy generator from a seed (None or an int >= 0) or a Generator (used as is)."""
    if isinstance(value, np.random.Generator):
        return value
    try:
        return np.random.default_rng(seed(name, value))
    except TypeError:
        raise TypeError(f"{name} must be None, an int >= 0 or a numpy Generator, "
                        f"got {value!r}") from None


# -- arrays


def dtype(name: str, value, kinds: str = "biuf"):
    """``value`` as a NumPy dtype of one of ``kinds`` (never None, which NumPy reads as
    float64)."""
    try:
        dt = None if value is None else np.dtype(value)
    except (TypeError, ValueError):
        dt = None
    if dt is None:
        raise TypeError(f"{name}={value!r:.200} is not a dtype (e.g. np.float32)")
    if dt.kind not in kinds:
        raise TypeError(f"{name} must be a numeric dtype, got {dt}")
    return dt


def floating_dtype(name: str, dtype):
    """``dtype`` as float32 or float64."""
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None:
        raise TypeError(f"{name}={dtype!r:.200} is not a dtype (use np.float32 or np.float64)")
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def array(name: str, a, *, ndim=None, min_ndim=None, dtype=None, finite: bool = True,
          min_rows: int = 1, integers: str = "refuse"):
    """An array of numbers with samples on axis 0, checked for rank, size and NaN/Inf.

    Returns it (cast to ``dtype`` when given). Integer (and bool) input is refused with
    ``integers="refuse"``, or cast to float64 (or ``dtype``) with ``integers="cast"``.
    """
    xp = array_module(a)
    if not hasattr(a, "dtype"):
        a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if a.dtype.kind != "f":
        if integers != "cast":
            raise TypeError(f"{name} must be a float array, got dtype {a.dtype} "
                            "(convert it first)")
        a = a.astype(np.float64 if dtype is None else dtype)
    if ndim is not None and a.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have ndim {ndim}, got shape {tuple(a.shape)}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{name} must have shape (n_samples, n_features, ...), got shape "
                         f"{tuple(a.shape)}")
    if a.ndim and a.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
    if a.ndim and a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got shape "
                         f"{tuple(a.shape)}")
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    if finite and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def class_ids(name: str, t, n_classes: int, n=None):
    """Integer class ids of shape (n,) in [0, n_classes)."""
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if t.ndim != 1 or (n is not None and t.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise ValueError(f"{name} must be class ids of shape {want}, got shape "
                         f"{tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} class ids must be integers, got dtype {t.dtype}")
    if t.shape[0]:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains class id {bad}, outside [0, {n_classes})")
    return t


def binary_labels(name: str, t, n: int, dtype=None):
    """Labels 0/1 of one binary output: shape (n,) or (n, 1), ints, floats or bools holding
    only 0 and 1. Returned as shape (n,), cast to ``dtype`` when given."""
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if t.shape not in ((n,), (n, 1)):
        raise ValueError(f"{name} must be labels 0/1 of shape ({n},) or ({n}, 1), got shape "
                         f"{tuple(t.shape)}")
    if t.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold 0/1 as ints, floats or bools, got dtype {t.dtype}")
    xp = array_module(t)
    if n and not bool(xp.logical_or(t == 0, t == 1).all()):
        bad = t[xp.logical_not(xp.logical_or(t == 0, t == 1))].ravel()[0]
        raise ValueError(f"{name} must hold only 0 and 1 (a sigmoid output has one unit), "
                         f"got {bad.item()!r}")
    t = t.reshape(n)
    return t if dtype is None else t.astype(dtype)


def labels(name: str, t, n: int, n_classes: int):
    """Integer class ids of shape (n,) in [0, n_classes), or one-hot of shape (n, n_classes)."""
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if t.ndim == 2 and t.shape == (n, n_classes):
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{name} one-hot rows must hold numbers, got dtype {t.dtype}")
        xp = array_module(t)
        if n and not bool(xp.logical_or(t == 0, t == 1).all()):
            raise ValueError(f"{name} one-hot rows must hold only 0 and 1 (no NaN, no soft "
                             "labels)")
        if n and not bool((t.sum(axis=1) == 1).all()):
            raise ValueError(f"{name} one-hot rows must each hold exactly one 1")
        return t
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(
            f"{name} must be class ids of shape ({n},) or one-hot of shape ({n}, {n_classes}),"
            f" got shape {tuple(t.shape)}"
        )
    return class_ids(name, t, n_classes, n)
