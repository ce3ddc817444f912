"""Pick the array library: NumPy on the CPU or CuPy on a CUDA GPU, behind one ``xp``.

Everything above this module computes through ``backend.xp`` (or ``array_module(*arrays)``),
so the same code runs on both.
"""

from __future__ import annotations

import os
import sys

import numpy as np

BACKENDS = ("auto", "numpy", "cupy")

_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install 'accel-dlfs[cuda12]'` "
    "(or `[cuda13]`), on a machine with an NVIDIA GPU and driver"
)


class Backend:
    """An array library and the few things that differ between them.

    ``name`` is "numpy" or "cupy"; ``xp`` is the module.
    """

    def __init__(self, name: str, xp):
        self.name = name
        self.xp = xp

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Backend) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def asarray(self, a, dtype=None):
        """``a`` on this backend's device (a no-op when it is already there)."""
        if self.name == "numpy":
            return np.asarray(to_numpy(a), dtype=dtype)
        return self.xp.asarray(a, dtype=dtype)

    def rng(self, seed=None):
        """A seeded generator with NumPy's Generator interface (random, standard_normal, ...)."""
        return self.xp.random.default_rng(seed)

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (a no-op on NumPy); needed for timing."""
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()


_cupy_error: str | None = None
_cache: dict[str, Backend] = {}


def _import_cupy():
    """CuPy if it imports and sees a GPU; else None, with the reason kept in ``_cupy_error``."""
    global _cupy_error
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device found")
        return cupy
    except Exception as exc:  # ImportError, CUDA driver errors, ...
        _cupy_error = f"{type(exc).__name__}: {exc}"
        return None


def _why_not_cupy() -> str:
    """Why "auto" chose NumPy, in a few words."""
    if _cupy_error and _cupy_error.startswith("ModuleNotFoundError"):
        return "CuPy is not installed"
    return f"CuPy cannot use a GPU here: {_cupy_error}"


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _import_cupy() is not None


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot be used here ("ModuleNotFoundError: ..."), or None when it can."""
    return None if cupy_available() else _cupy_error


def get_backend(name: str | Backend | None = "auto") -> Backend:
    """The backend called ``name``: "auto", "numpy" or "cupy" (or a Backend, returned as is).

    "auto" (and None) means CuPy when it imports and sees a GPU, else NumPy; the environment
    variable ACCEL_BACKEND, when set, replaces "auto".
    """
    if isinstance(name, Backend):
        return name
    if name is None:
        name = "auto"
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend={name!r} is not one of {BACKENDS}")
    name = name.lower()
    if name == "auto":
        env = os.environ.get("ACCEL_BACKEND", "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise ValueError(f"ACCEL_BACKEND={env!r} is not one of {BACKENDS}")
            name = env
    if name in _cache:
        return _cache[name]
    if name == "auto":
        cupy = _import_cupy()
        backend = Backend("cupy", cupy) if cupy is not None else Backend("numpy", np)
        why = "" if cupy is not None else f" ({_why_not_cupy()})"
        print(f"accel: backend auto -> {backend.name}{why}", file=sys.stderr)
    elif name == "cupy":
        cupy = _import_cupy()
        if cupy is None:
            raise RuntimeError(f"backend='cupy' cannot work here ({_cupy_error}); {_INSTALL_HINT}")
        backend = Backend("cupy", cupy)
    else:
        backend = Backend("numpy", np)
    _cache[name] = backend
    return backend


def is_cupy(a) -> bool:
    """True for a CuPy array (checked by its type's module: CuPy is never imported here)."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(*arrays):
    """numpy or cupy, whichever the arrays live on (like ``cupy.get_array_module``)."""
    for a in arrays:
        if is_cupy(a):
            import cupy

            return cupy
    return np


def to_numpy(a):
    """A NumPy copy of a CuPy array (or of a device stand-in such as ``accel.opcount``'s
    arrays, which have CuPy's ``get``); NumPy arrays and Python data are returned as arrays."""
    if is_cupy(a) or (isinstance(a, np.ndarray) and hasattr(a, "get")):
        return a.get()
    return np.asarray(a)


def to_device(a, backend: str | Backend = "auto", dtype=None):
    """``a`` as an array of ``backend`` (copied to the GPU for CuPy)."""
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise TypeError(f"dtype={dtype!r:.100} is not a dtype (e.g. np.float32)") from None
    return get_backend(backend).asarray(a, dtype=dtype)


def synchronize(backend: str | Backend | None = None) -> None:
    """Wait for queued GPU work; a no-op on NumPy."""
    get_backend(backend).synchronize()
