"""The one switch between the two paths: the fused Numba kernel or the ``xp`` reference.

- NumPy arrays of float32/float64 → the CPU kernel (``accel.kernels.*_cpu``);
- CuPy arrays of float32/float64 → the CUDA kernel (``accel.kernels.*_cuda``), launched on
  CuPy's current stream;
- the environment variable ``ACCEL_KERNELS=reference`` (or ``with dispatch.use("reference")``),
  other array types (or dtypes such as float16), or CuPy without a working ``numba.cuda``
  → the reference function in ``accel.functional``.

``OPS`` pairs each reference function with its kernels, explicitly; ``call`` runs any of them
the same way, and the op functions below are that call with the reference's arguments.
Kernel modules are imported on first use, so importing accel compiles nothing.
``last_path(op)`` tells which path the last call of ``op`` took ("cpu", "cuda" or
"reference") and ``calls()`` counts calls per (op, path); the benchmarks print them, and the
first use of each (op, path) is logged at INFO level on the "accel.dispatch" logger.

Input is checked the same way on both paths and is never used silently wrong: shapes must
match; read-only inputs that are not C-contiguous, or of the other float dtype, are copied;
arrays the kernel writes (parameters, optimizer state, running statistics) must have the
dtype of the first argument, and when not C-contiguous are copied and written back.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .backend import array_module, is_cupy

log = logging.getLogger(__name__)

MODES = ("fused", "reference")
FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# CPU: arrays smaller than this run the serial compile of a kernel (waking the thread pool
# costs ~10 µs idle, a scheduler time slice when the cores are busy, e.g. with BLAS threads).
PARALLEL_MIN = 1 << 18

_override: str | None = None
_last: dict[str, str] = {}
_calls: Counter = Counter()
_modules: dict[str, object] = {}
_cuda_error: str | None = None  # why numba.cuda cannot be used at all (None: it can)
_cuda_failed: dict[str, str] = {}  # kernel name → why its first compile/launch failed
_cuda_launched: set = set()  # kernels launched once without error


# -- the table: reference function → kernels


@dataclass(frozen=True)
class Op:
    """A reference function and its kernels ``accel.kernels.<family>_{cpu,cuda}.<kernel>``.

    The kernels take the reference's array arguments, then its scalars, then ``outputs``:
    arrays they fill and the op returns. ``reads`` are the positions of the read-only array
    arguments; every other array argument is updated in place. ``shapes(arrays)`` is the
    shape each array argument must have; ``outputs(arrays)`` the shapes of the outputs.
    """

    family: str
    kernel: str
    reads: tuple
    shapes: Callable
    outputs: Callable = lambda arrays: ()
    takes: Callable = lambda arrays: True  # False: the kernel cannot, the reference runs
    labels: tuple = ()  # positions of class ids (integers) or one-hot rows (floats)
    flat: bool = False  # elementwise: the kernel takes the arrays as 1-D views


def _like_first(arrays):
    return [arrays[0].shape] * len(arrays)


def _matrix_and_vectors(*kinds):
    """Shapes for an (N, D) op: "x" arguments are (N, D), "d" arguments (D,), "n" (N,)."""
    first_x = kinds.index("x")

    def shapes(arrays):
        shape = arrays[first_x].shape
        if len(shape) != 2:
            raise ValueError(f"this op takes a matrix of shape (N, D), got shape {shape}")
        by_kind = {"x": shape, "d": shape[1:], "n": shape[:1]}
        return [by_kind[k] for k in kinds]
    return shapes


def _outputs(*kinds):
    def outputs(arrays):
        n, d = arrays[0].shape
        return [{"x": (n, d), "d": (d,), "n": (n,)}[k] for k in kinds]
    return outputs


def _scores_and_labels(arrays):
    x, t = arrays
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, C), got {x.shape}")
    return [x.shape, x.shape[:1] if t.ndim == 1 else x.shape]


OPS: dict[Callable, Op] = {
    F.sgd: Op("optim", "sgd", reads=(1,), shapes=_like_first, flat=True),
    F.momentum: Op("optim", "momentum", reads=(1,), shapes=_like_first, flat=True),
    F.nesterov: Op("optim", "nesterov", reads=(1,), shapes=_like_first, flat=True),
    F.adagrad: Op("optim", "adagrad", reads=(1,), shapes=_like_first, flat=True),
    F.rmsprop: Op("optim", "rmsprop", reads=(1,), shapes=_like_first, flat=True),
    F.adam: Op("optim", "adam", reads=(1,), shapes=_like_first, flat=True),
    F.batchnorm_forward_train: Op(
        "batchnorm", "batchnorm_forward_train", reads=(0, 1, 2),
        shapes=_matrix_and_vectors("x", "d", "d", "d", "d"),
        outputs=_outputs("x", "d", "d"), takes=lambda a: a[0].shape[0] > 0),
    F.batchnorm_forward_eval: Op(
        "batchnorm", "batchnorm_forward_eval", reads=(0, 1, 2, 3, 4),
        shapes=_matrix_and_vectors("x", "d", "d", "d", "d"), outputs=_outputs("x")),
    F.batchnorm_backward: Op(
        "batchnorm", "batchnorm_backward", reads=(0, 1, 2, 3, 4),
        shapes=_matrix_and_vectors("x", "x", "d", "d", "d", "d", "d"),
        outputs=_outputs("x")),
    F.bias_activation: Op(
        "layers", "bias_activation", reads=(1,), shapes=_matrix_and_vectors("x", "d")),
    F.activation_backward_bias: Op(
        "layers", "activation_backward_bias", reads=(0, 1),
        shapes=_matrix_and_vectors("x", "x", "d"), outputs=_outputs("x")),
    F.softmax_cross_entropy: Op(
        "layers", "softmax_cross_entropy", reads=(0, 1), shapes=_scores_and_labels,
        outputs=_outputs("n", "x"), labels=(1,), takes=lambda a: a[1].ndim == 1),
}


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
    if mode() == "reference" or a.dtype not in FUSED_DTYPES:
        return None
    if type(a) is np.ndarray:
        return "cpu"
    if is_cupy(a):
        return "cuda" if _cuda_ok() else None
    return None


def _cuda_ok() -> bool:
    global _cuda_error
    if _cuda_error is not None:
        return False
    try:
        if not numba_cuda().is_available():
            raise RuntimeError("numba.cuda.is_available() is False")
        return True
    except Exception as exc:  # ImportError (no numba-cuda), driver or toolkit problems
        _cuda_error = f"{type(exc).__name__}: {exc}"
        log.warning("accel: CUDA kernels unavailable (%s); using the CuPy reference. "
                    "Install numba-cuda, e.g. pip install 'accel-dlfs[cuda12]'", _cuda_error)
        return False


def numba_cuda():
    """``numba.cuda``, imported through ``accel.kernels.cuda_jit`` (its one import point)."""
    return importlib.import_module("accel.kernels.cuda_jit").cuda


def cuda_failures() -> dict:
    """kernel name → why its first CUDA compile or launch failed (those take the reference);
    ``"*"`` when numba.cuda itself is unusable here."""
    out = dict(_cuda_failed)
    if _cuda_error is not None:
        out["*"] = _cuda_error
    return out


def kernels(family: str, target: str):
    """The kernel module ``accel.kernels.<family>_<target>`` (imported, not compiled, here)."""
    name = f"{family}_{target}"
    mod = _modules.get(name)
    if mod is None:
        mod = _modules[name] = importlib.import_module(f"accel.kernels.{name}")
    return mod


def _kernel(op: Op, target: str, size: int):
    """The kernel of ``op`` for ``target``; on the CPU the serial compile below
    PARALLEL_MIN elements. None when the module has no such kernel."""
    mod = kernels(op.family, target)
    table = mod.SERIAL if target == "cpu" and size < PARALLEL_MIN else mod.KERNELS
    return table.get(op.kernel)


def route(reference, *arrays) -> str | None:
    """The path ``call(reference, *arrays)`` takes: "cpu", "cuda", or None (the reference)."""
    op = OPS[reference]
    target = _target(arrays[0])
    if target is None or not op.takes(arrays) or _kernel(op, target, arrays[0].size) is None:
        return None
    return target


def launch_cuda(kernel, launch, *args) -> bool:
    """Launch a CUDA kernel with ``launch`` = (blocks, threads); on CuPy's current stream when
    the arrays are CuPy's (the simulator's NumPy arrays take Numba's default stream).

    The first launch of each kernel compiles it: any exception there (Numba typing or
    lowering, NVVM, the driver, CuPy) is logged once with the reason, the kernel is marked
    failed (``cuda_failures()``) and False is returned: this and every later call take the
    reference, so a kernel that cannot build here costs speed, not the run. After a first
    launch that worked, errors are real errors and propagate.
    """
    blocks, threads = launch
    if not blocks:
        return True
    name = getattr(kernel, "__name__", repr(kernel))
    if name in _cuda_failed:
        return False
    first = name not in _cuda_launched
    try:
        stream = _cupy_stream() if is_cupy(args[0]) else None
        if stream is None:
            kernel[blocks, threads](*args)
        else:
            kernel[blocks, threads, stream](*args)
    except Exception as exc:
        if not first:
            raise
        _cuda_failed[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
        log.warning("accel: CUDA kernel %s failed on its first launch (%s); it takes the "
                    "reference from now on", name, _cuda_failed[name])
        return False
    _cuda_launched.add(name)
    return True


def _cupy_stream():
    """CuPy's current stream as a Numba stream (None: CuPy's default stream)."""
    import cupy

    ptr = cupy.cuda.get_current_stream().ptr
    if not ptr:
        return None
    return numba_cuda().external_stream(ptr)


# -- argument preparation (both paths)


_NAMES = {ref: tuple(inspect.signature(ref).parameters) for ref in OPS}


def _prepare(op: Op, names, arrays):
    """Check every array argument; returns (arrays for the kernel, [(copy, original)])."""
    for i, a in enumerate(arrays):
        kind = getattr(getattr(a, "dtype", None), "kind", None)
        if kind != "f" and not (i in op.labels and kind in ("i", "u")):
            name = names[i]
            raise TypeError(f"{name} must be a float array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    dtype = arrays[0].dtype
    shapes = op.shapes(arrays)
    out, written = [], []
    for i, (name, a, shape) in enumerate(zip(names, arrays, shapes)):
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        if a.flags.c_contiguous and (a.dtype == dtype or (i in op.labels and a.dtype == np.int64)):
            out.append(a)  # the common case: nothing to convert (NumPy or CuPy alike)
            continue
        xp = array_module(a)
        if i in op.reads:
            kind = np.int64 if a.dtype.kind in "iu" else dtype  # class ids stay integers
            out.append(xp.ascontiguousarray(a, dtype=kind))
            continue
        if a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype}; it is updated in place and must "
                            f"have the dtype of {names[0]}, {dtype}")
        if a.flags.c_contiguous:
            out.append(a)
        else:
            tmp = xp.ascontiguousarray(a)
            out.append(tmp)
            written.append((tmp, a))
    return out, written


# -- kernel outputs

# The outputs of each op's last call, handed out again once nothing holds them any more (no
# caller, no view): the kernels write every element, and a fresh large array costs page
# faults on every call (about 1,300 per batch-norm step at 1024×4096 float32, most of its time).
_output_cache: dict = {}


def _output(key, shape, dtype, xp):
    a = _output_cache.get(key)
    # 3 references: the cache, ``a`` and getrefcount's argument; any holder or view adds one
    if (a is not None and sys.getrefcount(a) == 3 and a.shape == shape and a.dtype == dtype
            and array_module(a) is xp):
        return a
    a = _output_cache[key] = xp.empty(shape, dtype)
    return a


# -- the one runner


def call(reference, *arrays, scalars=(), target=None, names=None):
    """``reference(*arrays, *scalars)`` on the path the arrays call for (``target`` forces
    "cpu" or "cuda", for tests); returns what the reference returns."""
    op = OPS[reference]
    names = names or _NAMES[reference]
    prepared, written = _prepare(op, names, arrays)
    scalars = tuple(float(s) for s in scalars)  # one compiled signature per dtype
    if target is None:
        target = _target(arrays[0])
    kernel = None
    if target is not None and op.takes(prepared):
        kernel = _kernel(op, target, arrays[0].size)
    if kernel is not None:
        xp = array_module(prepared[0])
        outputs = [_output((op.kernel, i), shape, prepared[0].dtype, xp)
                   for i, shape in enumerate(op.outputs(prepared))]
        arrays_in = [a.reshape(-1) for a in prepared] if op.flat else prepared
        args = (*arrays_in, *scalars, *outputs)
        if target == "cpu":
            kernel(*args)
            ran = True
        else:
            ran = launch_cuda(kernel, kernels(op.family, target).launch(op.kernel, *arrays_in),
                              *args)
        if ran:
            _record(op.kernel, target)
            for tmp, orig in written:
                orig[...] = tmp
            return None if not outputs else outputs[0] if len(outputs) == 1 else tuple(outputs)
    _record(op.kernel, "reference")
    reads = [p if i in op.reads else a for i, (a, p) in enumerate(zip(arrays, prepared))]
    return reference(*reads, *scalars)


# -- the ops, with the reference's arguments


def optimizer_step(rule, p, g, state=(), scalars=()):
    """``rule(p, g, *state, *scalars)`` (an optimizer rule of ``accel.functional``);
    updates ``p`` and ``state`` in place."""
    names = ["p", "g", *(f"state[{k}]" for k in range(len(state)))]
    call(rule, p, g, *state, scalars=scalars, names=names)


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    """As ``functional.batchnorm_forward_train``: (out, mean, invstd); running stats in place."""
    return call(F.batchnorm_forward_train, x, gamma, beta, running_mean, running_var,
                scalars=(momentum, eps))


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """As ``functional.batchnorm_forward_eval``: out."""
    return call(F.batchnorm_forward_eval, x, gamma, beta, running_mean, running_var,
                scalars=(eps,))


def batchnorm_backward(dy, x, gamma, mean, invstd, dgamma, dbeta):
    """As ``functional.batchnorm_backward``: returns dx; dgamma, dbeta in place."""
    return call(F.batchnorm_backward, dy, x, gamma, mean, invstd, dgamma, dbeta)


def bias_activation(y, b, act):
    """As ``functional.bias_activation``: y ← f(y + b) in place."""
    call(F.bias_activation, y, b, scalars=(act,))


def activation_backward_bias(dout, out, db, act):
    """As ``functional.activation_backward_bias``: returns dy; db in place."""
    return call(F.activation_backward_bias, dout, out, db, scalars=(act,))


def softmax_cross_entropy(x, t):
    """As ``functional.softmax_cross_entropy``: (losses, dx). The kernel takes class ids as
    they are (checked before, e.g. by ``MultiLayerNet.prepare``); one-hot rows take the
    reference."""
    return call(F.softmax_cross_entropy, x, t)
