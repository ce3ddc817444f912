"""The one switch between the two paths: the fused Numba kernel or the ``xp`` reference.

- NumPy arrays of float32/float64 → the CPU kernel (``accel.kernels.*_cpu``);
- CuPy arrays of float32/float64 → the CUDA kernel (``accel.kernels.*_cuda``), launched on
  CuPy's current stream;
- the environment variable ``ACCEL_KERNELS=reference`` (or ``with dispatch.use("reference")``),
  other array types (or dtypes such as float16), or CuPy without a working ``numba.cuda``
  → the ``xp`` reference functions in ``accel.optim`` / ``accel.layers``.

The functions here take exactly the reference's arguments. Kernel modules are imported on
first use, so importing accel compiles nothing. ``last_path(op)`` tells which path the last
call of ``op`` took ("cpu", "cuda" or "reference") and ``calls()`` counts calls per
(op, path); the benchmarks print them, and the first use of each (op, path) is logged at INFO
level on the "accel.dispatch" logger.

Input the kernels cannot take as is is never used silently wrong: read-only inputs that are
not C-contiguous, or of the other float dtype, are copied; arrays the kernel writes (the
parameters, optimizer state, running statistics) that are not C-contiguous are copied and
written back; written arrays of the wrong dtype are refused with a TypeError.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections import Counter

import numpy as np

log = logging.getLogger(__name__)

MODES = ("fused", "reference")
FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# CPU: arrays smaller than this run the serial compile of a kernel (waking the thread pool
# costs ~10 µs idle, a scheduler time slice when the cores are busy, e.g. with BLAS threads).
PARALLEL_MIN = 1 << 18

# CUDA launch shape: grid-stride loops, so any grid covers any size.
THREADS_PER_BLOCK = 256
MAX_BLOCKS = 4096

_override: str | None = None
_last: dict[str, str] = {}
_calls: Counter = Counter()
_modules: dict[str, object] = {}
_cuda_error: str | None = None


# -- the switch


def mode() -> str:
    """"fused" or "reference": ``use()``'s override, else env ACCEL_KERNELS (default fused)."""
    if _override is not None:
        return _override
    env = os.environ.get("ACCEL_KERNELS", "").strip().lower()
    if env in ("", "fused", "auto", "kernel", "kernels"):
        return "fused"
    if env == "reference":
        return "reference"
    raise ValueError(f"ACCEL_KERNELS={env!r}: use 'fused' (the default) or 'reference'")


@contextlib.contextmanager
def use(which: str):
    """Run a block on one path: ``with dispatch.use("reference"): ...``."""
    global _override
    if which not in MODES:
        raise ValueError(f"use({which!r}): must be one of {MODES}")
    before, _override = _override, which
    try:
        yield
    finally:
        _override = before


def last_path(op: str | None = None):
    """The path ("cpu", "cuda" or "reference") the last call of ``op`` took, or a dict of
    all ops when ``op`` is None (None for an op not called yet)."""
    return dict(_last) if op is None else _last.get(op)


def calls() -> Counter:
    """Counter of calls per (op, path) since the last ``reset_calls()``."""
    return Counter(_calls)


def reset_calls() -> None:
    _calls.clear()
    _last.clear()


def _record(op: str, path: str) -> None:
    if (op, path) not in _calls:
        log.info("accel: %s runs on the %s path", op, path)
    _calls[(op, path)] += 1
    _last[op] = path


def _target(a) -> str | None:
    """"cpu", "cuda" or None (reference) for an array, from the switch and its type."""
    if mode() == "reference":
        return None
    if type(a) is np.ndarray:
        return "cpu" if a.dtype in FUSED_DTYPES else None
    if type(a).__module__.split(".")[0] == "cupy":
        return "cuda" if a.dtype in FUSED_DTYPES and _cuda_ok() else None
    return None


def _cuda_ok() -> bool:
    global _cuda_error
    if _cuda_error is not None:
        return False
    try:
        from numba import cuda

        if not cuda.is_available():
            raise RuntimeError("numba.cuda.is_available() is False")
        return True
    except Exception as exc:  # ImportError (no numba-cuda), driver or toolkit problems
        _cuda_error = f"{type(exc).__name__}: {exc}"
        log.warning("accel: CUDA kernels unavailable (%s); using the CuPy reference. "
                    "Install numba-cuda, e.g. pip install 'accel-dlfs[cuda12]'", _cuda_error)
        return False


def kernels(kind: str, target: str):
    """The kernel module ``accel.kernels.<kind>_<target>`` (imported, not compiled, here)."""
    name = f"{kind}_{target}"
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = importlib.import_module(f"accel.kernels.{name}")
    return mod


def cpu_kernel(kind: str, name: str, size: int):
    """The CPU kernel ``name`` of ``accel.kernels.<kind>_cpu``: the parallel compile for
    ``size`` ≥ PARALLEL_MIN elements, else the serial one (None when there is no kernel)."""
    mod = kernels(kind, "cpu")
    return (mod.KERNELS if size >= PARALLEL_MIN else mod.SERIAL).get(name)


def launch_cuda(kernel, n: int, *args) -> bool:
    """Launch a grid-stride CUDA kernel over ``n`` items on CuPy's current stream.

    False (nothing ran) when Numba cannot compile the kernel for this GPU or toolkit: the
    error is logged once and every later call takes the CuPy reference, so a kernel that
    fails to build costs speed, not the run.
    """
    global _cuda_error
    if n == 0:
        return True
    tpb = THREADS_PER_BLOCK
    blocks = max(1, min((n + tpb - 1) // tpb, MAX_BLOCKS))
    stream = _cupy_stream()
    from numba.core.errors import NumbaError

    try:
        if stream is None:
            kernel[blocks, tpb](*args)
        else:
            kernel[blocks, tpb, stream](*args)
    except NumbaError as exc:  # typing/lowering/linking: raised before the kernel runs
        _cuda_error = f"{type(exc).__name__}: {exc}"
        log.warning("accel: CUDA kernel %s failed to compile (%s); using the CuPy reference",
                    getattr(kernel, "__name__", kernel), _cuda_error)
        return False
    return True


def _cupy_stream():
    """CuPy's current stream as a Numba stream (None: the default stream, or no CuPy)."""
    try:
        import cupy
    except ImportError:
        return None
    ptr = cupy.cuda.get_current_stream().ptr
    if not ptr:
        return None
    from numba import cuda

    return cuda.external_stream(ptr)


# -- argument preparation


def _check_float(name, a):
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {a.dtype}")


def _read(name, a, dtype, shape):
    """A read-only input as a C-contiguous array of ``dtype`` (copied only if it must be)."""
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    _check_float(name, a)
    xp = np if type(a) is np.ndarray else _xp(a)
    return xp.ascontiguousarray(a, dtype=dtype)


def _written(name, a, dtype, shape):
    """An array the kernel updates in place: (array to pass, original to copy back or None)."""
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}; the fused kernel updates it in place "
                        f"and needs {dtype} (the dtype of the parameters/input)")
    if a.flags.c_contiguous:
        return a, None
    return _xp(a).ascontiguousarray(a), a


def _xp(a):
    if type(a) is np.ndarray:
        return np
    import cupy

    return cupy


def _copy_back(pairs):
    for tmp, orig in pairs:
        if orig is not None:
            orig[...] = tmp


# -- optimizer updates


def optimizer_step(rule, p, g, state=(), scalars=()):
    """``rule(p, g, *state, *scalars)`` (a reference function of ``accel.optim``) on the
    path the arrays call for; updates ``p`` and ``state`` in place."""
    name = rule.__name__
    target = _target(p)
    if target is None:
        _record(name, "reference")
        rule(p, g, *state, *scalars)
        return
    if target == "cpu":
        kernel = cpu_kernel("optim", name, p.size)
    else:
        kernel = kernels("optim", target).KERNELS.get(name)
    if kernel is None:
        _record(name, "reference")
        rule(p, g, *state, *scalars)
        return
    shape, dtype = p.shape, p.dtype
    written = [_written("p", p, dtype, shape)]
    written += [_written(f"state[{k}]", s, dtype, shape) for k, s in enumerate(state)]
    g_flat = _read("g", g, dtype, shape).reshape(-1)
    flat = [w.reshape(-1) for w, _ in written]
    scalars = tuple(float(s) for s in scalars)  # one compiled signature per dtype
    if target == "cpu":
        kernel(flat[0], g_flat, *flat[1:], *scalars)
    elif not launch_cuda(kernel, p.size, flat[0], g_flat, *flat[1:], *scalars):
        _record(name, "reference")
        rule(p, g, *state, *scalars)
        return
    _record(name, target)
    _copy_back(written)


# -- batch normalization


def _bn_target(x):
    target = _target(x)
    if target is not None and x.ndim != 2:
        raise ValueError(f"batch norm kernels take x of shape (N, D), got {x.shape}")
    if target is not None and x.shape[0] == 0:
        return None  # no rows: the reference's empty output and NaN statistics
    return target


def _bn_kernel(target, name, size):
    if target == "cpu":
        return cpu_kernel("batchnorm", name, size)
    return getattr(kernels("batchnorm", target), name)


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    """As ``accel.layers.batchnorm_forward_train``: returns (out, mean, invstd) and updates
    the running statistics in place."""
    from . import layers

    target = _bn_target(x)
    if target is None:
        _record("batchnorm_forward_train", "reference")
        return layers.batchnorm_forward_train(x, gamma, beta, running_mean, running_var,
                                              momentum, eps)
    xp, dtype, (n, d) = _xp(x), x.dtype, x.shape
    x = _read("x", x, dtype, (n, d))
    gamma, beta = _read("gamma", gamma, dtype, (d,)), _read("beta", beta, dtype, (d,))
    written = [_written("running_mean", running_mean, dtype, (d,)),
               _written("running_var", running_var, dtype, (d,))]
    out, mean, invstd = xp.empty((n, d), dtype), xp.empty(d, dtype), xp.empty(d, dtype)
    args = (x, gamma, beta, written[0][0], written[1][0], float(momentum), float(eps),
            out, mean, invstd)
    kernel = _bn_kernel(target, "batchnorm_forward_train", n * d)
    if target == "cpu":
        kernel(*args)
    elif not launch_cuda(kernel, d, *args):
        _record("batchnorm_forward_train", "reference")
        return layers.batchnorm_forward_train(x, gamma, beta, running_mean, running_var,
                                              momentum, eps)
    _record("batchnorm_forward_train", target)
    _copy_back(written)
    return out, mean, invstd


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """As ``accel.layers.batchnorm_forward_eval``: returns out."""
    from . import layers

    target = _bn_target(x)
    if target is None:
        _record("batchnorm_forward_eval", "reference")
        return layers.batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps)
    xp, dtype, (n, d) = _xp(x), x.dtype, x.shape
    args = [_read("x", x, dtype, (n, d))]
    args += [_read(k, a, dtype, (d,)) for k, a in
             (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
              ("running_var", running_var))]
    out = xp.empty((n, d), dtype)
    kernel = _bn_kernel(target, "batchnorm_forward_eval", n * d)
    if target == "cpu":
        kernel(*args, float(eps), out)
    elif not launch_cuda(kernel, n * d, *args, float(eps), out):
        _record("batchnorm_forward_eval", "reference")
        return layers.batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps)
    _record("batchnorm_forward_eval", target)
    return out


def batchnorm_backward(dy, x, gamma, mean, invstd):
    """As ``accel.layers.batchnorm_backward``: returns (dx, dgamma, dbeta)."""
    from . import layers

    target = _bn_target(x)
    if target is None:
        _record("batchnorm_backward", "reference")
        return layers.batchnorm_backward(dy, x, gamma, mean, invstd)
    xp, dtype, (n, d) = _xp(x), x.dtype, x.shape
    args = [_read("dy", dy, dtype, (n, d)), _read("x", x, dtype, (n, d))]
    args += [_read(k, a, dtype, (d,)) for k, a in
             (("gamma", gamma), ("mean", mean), ("invstd", invstd))]
    dx, dgamma, dbeta = xp.empty((n, d), dtype), xp.empty(d, dtype), xp.empty(d, dtype)
    kernel = _bn_kernel(target, "batchnorm_backward", n * d)
    if target == "cpu":
        kernel(*args, dx, dgamma, dbeta)
    elif not launch_cuda(kernel, d, *args, dx, dgamma, dbeta):
        _record("batchnorm_backward", "reference")
        return layers.batchnorm_backward(dy, x, gamma, mean, invstd)
    _record("batchnorm_backward", target)
    return dx, dgamma, dbeta
