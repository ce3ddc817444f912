"""The one switch between the two paths: the fused Numba kernel or the ``xp`` reference.

- NumPy arrays of float32/float64 → the CPU kernel (``accel.kernels.*_cpu``);
- CuPy arrays of float32/float64 → the CUDA kernel (``accel.kernels.*_cuda``), launched on
  CuPy's current stream;
- the environment variable ``ACCEL_KERNELS=reference`` (or ``with dispatch.use("reference")``),
  other array types (or dtypes such as float16), or CuPy without a working ``numba.cuda``
  → the reference function in ``accel.functional``.

``OPS`` pairs each reference function with its kernels, explicitly, and says what each
kernel parameter is (``Op.spec``). A ``Plan`` is one op prepared for one set of arrays
(types, shapes, dtypes): the checks, the path, the kernel, its launch shape and the output
buffers are decided once, so a call costs little more than calling the kernel itself. A
``Site`` is a place in the code that calls an op again and again (a layer's forward, an
optimizer's update): it keeps its plan and makes a new one when the arrays change. Outputs
are new arrays at every call, or, for a site told ``reuse = True`` (a network's layers,
which consume each output before the next call), the plan's own buffers, refilled by every
call: no allocation, no page faults for a large output. ``call`` is the one-off form; the
op functions below are ``call`` with the reference's arguments. Kernel modules are
imported on first use, so importing accel compiles nothing. ``last_path(op)`` tells which
path the last call of ``op`` took ("cpu", "cuda" or "reference") and ``calls()`` counts calls
per (op, path); the benchmarks print them, and the first use of each (op, path) is logged at
INFO level on the "accel.dispatch" logger.

Input is checked the same way on both paths and is never used silently wrong: shapes must
match; read-only inputs that are not C-contiguous, or of the other float dtype, are copied;
arrays the kernel writes (parameters, optimizer state, running statistics) must have the
dtype of the first argument and be writable, and when not C-contiguous are copied and
written back.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import operator
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .backend import array_module, is_cupy
from .kernels.guard_record import FLAGS, SKIP, SKIPPED

log = logging.getLogger(__name__)

MODES = ("fused", "reference")
FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F64 = np.dtype(np.float64)

# CPU: arrays smaller than this run the serial compile of a kernel. Waking the thread pool
# costs more than a small array's work, and a scheduler time slice when another process keeps
# a core busy; the parallel Adam kernel pays from about 1e6 elements, quiet or with a busy
# core (docs/performance.md, "Threads"). The kernels' results do not depend on it (they
# split their sums by the data's size).
PARALLEL_MIN = 1 << 20

_override: str | None = None
_switched = 0  # counts use() entries and exits: a plan made before a switch is remade
_last: dict[str, str] = {}
_calls: Counter = Counter()
_counts: dict[tuple, list] = {}  # (op, "cpu") → [calls]: the CPU plans' counter, cheaper
_logged: set = set()  # (op, path) pairs whose first use was logged
_modules: dict[str, object] = {}
_cuda_error: str | None = None  # why numba.cuda cannot be used at all (None: it can)
_cuda_failed: dict[str, str] = {}  # kernel name → why its first compile/launch failed
_cuda_launched: set = set()  # kernels launched once without error
_stand_ins: dict = {}  # array type → StandIn: NumPy arrays that stand for a device's


# -- the table: reference function → kernels


# One token per kernel parameter, in order: its role, its element type, its dimensions.
_TOKEN = re.compile(r"(?P<role>[rwoz])(?P<type>[fidl]?)(?P<ndim>[12])|(?P<fixed>[sk])")
_ROLES = re.compile(r"[rw]+s*o*z*k?")  # the reference's arrays and scalars, then the kernel's
_INT64 = np.dtype(np.int64)


@dataclass(frozen=True)
class Param:
    """One kernel parameter of an ``Op``: ``role``, element ``type`` and ``ndim`` as the
    kernel takes it (0: a scalar); see ``Op``."""

    role: str
    type: str
    ndim: int

    def dtype(self, first) -> np.dtype:
        """Its NumPy dtype when the first array's is ``first`` (labels: class ids, int64)."""
        return np.dtype(first) if self.type == "f" else _INT64 if self.type in "il" else _F64


def parse_params(spec: str) -> tuple:
    """``Op.spec`` as Params: "w1 r1 rd1 s k" → (w, f, 1), (r, f, 1), (r, d, 1), (s, d, 0),
    (k, i, 1)."""
    out = []
    for token in spec.split():
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise ValueError(f"parameter {token!r} in {spec!r}: want a role r/w/o/z, an "
                             "optional type f/i/d/l and 1 or 2 dimensions, or s, or k")
        if m["fixed"] == "s":
            out.append(Param("s", "d", 0))
        elif m["fixed"] == "k":
            out.append(Param("k", "i", 1))
        else:
            out.append(Param(m["role"], m["type"] or "f", int(m["ndim"])))
    return tuple(out)


@dataclass(frozen=True)
class Op:
    """A reference function and its kernels ``accel.kernels.<family>_{cpu,cuda}.<kernel>``.

    ``spec`` declares every kernel parameter, in order, as one token: role, element type
    (optional), dimensions as the kernel takes them. The reference's parameters come first,
    then the kernel's own:

    - role: ``r`` an array the reference reads, ``w`` one it updates in place, ``s`` a scalar
      (float64: the dispatch passes Python floats); ``o`` an output the op allocates and
      returns, ``z`` a zeroed workspace (``work``: its shapes), ``k`` the non-finite guard's
      record (int64, 1-D: the kernel changes nothing when record[SKIP] is set);
    - type: ``f`` the first array's float dtype (the default), ``i`` int64 (class ids,
      offsets, a record), ``d`` float64 whatever the dtype (the gradient-clipping array),
      ``l`` labels: class ids, int64, or one-hot rows of floats (which take the reference:
      ``takes``);
    - dimensions: 1 or 2. ``flat`` ops are elementwise: the kernel takes every array as a 1-D
      view, whatever its shape.

    ``shapes(arrays)`` is the shape each of the reference's arrays must have, ``outputs(arrays)``
    the shapes of the ``o`` arrays. By default, for a ``flat`` op every array has the first
    array's shape; otherwise the first array is a matrix (N, D), a 2-D parameter (N, D) and a
    1-D one (D,). ``takes(arrays)`` False: the kernel cannot, the reference runs.

    Derived from the spec once, here, so that a call reads them as they are: ``params`` (the
    Params), ``roles`` (their role letters), ``n_arrays`` (the reference's arrays, which come
    before its scalars), ``types`` (the type letters of those), ``record`` (the kernel takes
    the guard's record), ``work_params`` ((shape, Param) of each workspace), and the indices
    of the reference's arrays by type: ``labels``, ``ints``, ``doubles``.
    """

    family: str
    kernel: str
    spec: str
    shapes: Callable | None = None
    outputs: Callable | None = None
    takes: Callable = lambda arrays: True
    flat: bool = False
    work: tuple = ()  # the shape of each ``z`` array

    def __post_init__(self):
        params = parse_params(self.spec)
        roles = "".join(p.role for p in params)
        if not _ROLES.fullmatch(roles) or roles.count("z") != len(self.work):
            raise ValueError(f"{self.kernel}: spec {self.spec!r} must list the reference's "
                             "arrays (r, w), its scalars (s), then outputs (o), workspaces "
                             f"(z: {len(self.work)} in work) and the record (k)")
        if self.flat and (any(p.ndim > 1 for p in params) or "o" in roles and not self.outputs):
            raise ValueError(f"{self.kernel}: a flat op's kernel takes 1-D arrays, got "
                             f"{self.spec!r}; its outputs' shapes are given by outputs=")
        n = len(roles) - len(roles.lstrip("rw"))
        arrays = params[:n]
        derived = dict(
            params=params, roles=roles, n_arrays=n, record="k" in roles,
            work_params=tuple(zip(self.work, [p for p in params if p.role == "z"])),
            types="".join(p.type for p in arrays),
            labels=tuple(i for i, p in enumerate(arrays) if p.type == "l"),
            ints=tuple(i for i, p in enumerate(arrays) if p.type == "i"),
            doubles=tuple(i for i, p in enumerate(arrays) if p.type == "d"))
        outs = [p.ndim for p in params if p.role == "o"]
        if self.shapes is None:
            derived["shapes"] = _same_shape(n) if self.flat else _matrix(
                [p.ndim for p in arrays])
        if self.outputs is None:
            derived["outputs"] = _matrix(outs) if outs else lambda arrays: ()
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def _same_shape(n):
    """Shapes for an elementwise op: ``n`` times the first array's."""
    return lambda arrays: [arrays[0].shape] * n


def _matrix(ndims):
    """Shapes for an (N, D) op: (N, D) for a 2-D parameter, (D,) for a 1-D one."""
    def shapes(arrays):
        shape = arrays[0].shape
        if len(shape) != 2:
            raise ValueError(f"this op takes a matrix of shape (N, D), got shape {shape}")
        return [shape if ndim == 2 else shape[1:] for ndim in ndims]
    return shapes


def _scores_and_labels(arrays):
    x, t = arrays
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, C), got {x.shape}")
    return [x.shape, x.shape[:1] if t.ndim == 1 else x.shape]


def _optimizer_shapes(arrays):
    """p, g and the state: p's shape; the clip array (the last): (2,)."""
    return [arrays[0].shape] * (len(arrays) - 1) + [(2,)]


def _optimizer(kernel, spec):
    """An optimizer rule's Op: (p, g, *state, clip) then scalars, elementwise; the clip
    array [factor, Σg² so far] is float64."""
    return Op("optim", kernel, spec, _optimizer_shapes, flat=True)


def _guard_shapes(arrays):
    loss, g, g_starts, buffers, buffer_starts, saved, record = arrays
    return [loss.shape if loss.size == 1 else (1,), (g.size,), g_starts.shape,
            (buffers.size,), buffer_starts.shape, (buffers.size,), record.shape]


# Parameters as ``Op`` declares them: role r/w/s/o/z/k, type f (default)/i/d/l, dimensions.
OPS: dict[Callable, Op] = {
    # p, g, state..., clip; the scalars; the record
    F.sgd: _optimizer("sgd", "w1 r1 rd1 s s s k"),
    F.momentum: _optimizer("momentum", "w1 r1 w1 rd1 s s s s s k"),
    F.nesterov: _optimizer("nesterov", "w1 r1 w1 rd1 s s s s k"),
    F.adagrad: _optimizer("adagrad", "w1 r1 w1 rd1 s s s s k"),
    F.rmsprop: _optimizer("rmsprop", "w1 r1 w1 rd1 s s s s s k"),
    F.adadelta: _optimizer("adadelta", "w1 r1 w1 w1 rd1 s s s s s k"),
    F.adam: _optimizer("adam", "w1 r1 w1 w1 rd1 s s s s s s s s s k"),
    # workspace: the blocks' (CUDA) or chunks' (CPU) sums, room for clip_cuda.MAX_BLOCKS; the
    # CUDA blocks' ticket
    F.clip_factor: Op("clip", "clip_factor", "r1 wd1 s s s zd1 zi1",
                      lambda a: [a[0].shape, (2,)], flat=True, work=((64,), (1,))),
    F.batchnorm_forward_train: Op("batchnorm", "batchnorm_forward_train",
                                  "r2 r1 r1 w1 w1 s s o2 o1 o1", takes=lambda a: a[0].shape[0] > 0),
    F.batchnorm_forward_eval: Op("batchnorm", "batchnorm_forward_eval", "r2 r1 r1 r1 r1 s o2"),
    F.batchnorm_backward: Op("batchnorm", "batchnorm_backward", "r2 r2 r1 r1 r1 w1 w1 o2"),
    F.bias_activation: Op("layers", "bias_activation", "w2 r1 s"),
    F.activation_backward_bias: Op("layers", "activation_backward_bias", "r2 r2 w1 s o2"),
    F.softmax_cross_entropy: Op("layers", "softmax_cross_entropy", "r2 rl1 o1 o2",
                                _scores_and_labels, lambda a: [a[0].shape[:1], a[0].shape],
                                takes=lambda a: a[1].ndim == 1),
    F.scaled_add: Op("layers", "scaled_add", "w1 r1 s", flat=True),
    # loss, g, g_starts, buffers, buffer_starts, saved, record; 2 scalars; 2 workspaces
    F.nonfinite_guard: Op("guard", "nonfinite_guard", "r1 r1 ri1 w1 ri1 w1 wi1 s s zd1 zi1",
                          _guard_shapes, flat=True, work=((1,), (1,))),
}
_NAMES = {ref: tuple(inspect.signature(ref).parameters) for ref in OPS}


# -- the switch


def mode() -> str:
    """"fused" or "reference": ``use()``'s override, else env ACCEL_KERNELS (default fused;
    read when a plan is made, so set it before the process trains)."""
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
    global _override, _switched
    if which not in MODES:
        raise ValueError(f"use({which!r}): must be one of {MODES}")
    before, _override = _override, which
    _switched += 1
    try:
        yield
    finally:
        _override = before
        _switched += 1


def last_path(op: str | None = None):
    """The path ("cpu", "cuda" or "reference") the last call of ``op`` took, or a dict of
    all ops when ``op`` is None (None for an op not called yet)."""
    return dict(_last) if op is None else _last.get(op)


def calls() -> Counter:
    """Counter of calls per (op, path) since the last ``reset_calls()``."""
    out = Counter(_calls)
    for key, (n,) in _counts.items():
        if n:
            out[key] += n
    return out


def reset_calls() -> None:
    _calls.clear()
    _last.clear()
    for count in _counts.values():
        count[0] = 0


def _first_use(op: str, path: str) -> None:
    """Log the first use of an (op, path) at INFO level."""
    if (op, path) not in _logged:
        _logged.add((op, path))
        log.info("accel: %s runs on the %s path", op, path)


def _record(op: str, path: str) -> None:
    _first_use(op, path)
    _calls[(op, path)] += 1
    _last[op] = path


# -- device stand-ins (accel.opcount's counting arrays)


@dataclass(frozen=True)
class StandIn:
    """NumPy arrays of a subclass (``array_type``) that stand for a device's
    (``accel.opcount``): a fused op runs the CPU kernel on their plain views,
    ``launched(kernel name)`` is told of each launch, and outputs come back as the subclass."""

    array_type: type
    launched: Callable


def register_stand_in(stand_in: StandIn) -> None:
    _stand_ins[stand_in.array_type] = stand_in


# -- which path, which kernel


def _target(a) -> str | None:
    """"cpu", "cuda" or None (reference) for an array, from the switch and its type."""
    if mode() == "reference" or a.dtype not in FUSED_DTYPES:
        return None
    if type(a) is np.ndarray or type(a) in _stand_ins:
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
    return _cuda_jit().cuda


def _cuda_jit():
    return importlib.import_module("accel.kernels.cuda_jit")


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


# -- CUDA launches


def launch_cuda(kernel, launch, *args, launcher=None) -> bool:
    """Launch a CUDA kernel with ``launch`` = (blocks, threads); on CuPy's current stream when
    the arrays are CuPy's (the simulator's NumPy arrays take Numba's default stream), through
    ``launcher`` (a ``cuda_jit.Launcher``) when given.

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
        stream = _cupy_stream() if is_cupy(args[0]) else 0
        if launcher is not None:
            launcher(stream, args)
        elif not stream:
            kernel[blocks, threads](*args)
        else:
            kernel[blocks, threads, numba_cuda().external_stream(stream)](*args)
    except Exception as exc:
        if not first:
            raise
        _cuda_failed[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
        log.warning("accel: CUDA kernel %s failed on its first launch (%s); it takes the "
                    "reference from now on", name, _cuda_failed[name])
        return False
    _cuda_launched.add(name)
    return True


def _cupy_stream() -> int:
    """The handle of CuPy's current stream (0: the default stream)."""
    import cupy

    return cupy.cuda.get_current_stream().ptr


# -- argument checks and conversion (both paths)


_TYPE_NAME = {"f": "a float", "i": "an integer", "d": "a float64", "l": "a float or integer"}


def _check(op: Op, names, arrays):
    """Types, dtypes and shapes of the reference's arrays: TypeError/ValueError naming the
    argument, before anything runs."""
    for name, a, type_ in zip(names, arrays, op.types):
        dtype = getattr(a, "dtype", None)
        kind = getattr(dtype, "kind", None)
        if type_ == "f":
            ok = kind == "f"
        elif type_ == "i":
            ok = kind in ("i", "u")
        elif type_ == "d":
            ok = dtype == _F64
        else:  # labels
            ok = kind in ("f", "i", "u")
        if not ok:
            raise TypeError(f"{name} must be {_TYPE_NAME[type_]} array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    for name, a, shape in zip(names, arrays, op.shapes(arrays)):
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    for name, a, role in zip(names, arrays, op.roles):
        if role == "w" and not _writeable(a):
            raise ValueError(f"{name} is read-only; it is updated in place and must be "
                             "writable")


def _layout(a):
    """What Numba's type of an array holds beyond its dtype and dimensions: (C-contiguous,
    writable, aligned, type). A compiled function called directly takes arrays of exactly
    these (its conversion does not check them)."""
    f = a.flags
    return f.c_contiguous, f.writeable, f.aligned, type(a)


_ONCE = ()  # a plan's entry after its first call (falsy: the dispatcher is called)


def _is_record(a) -> bool:
    """A record as the CPU kernels were compiled for: a writable C-contiguous int64 vector."""
    return type(a) is np.ndarray and a.dtype == _INT64 and a.ndim == 1 and \
        _layout(a) == (True, True, True, np.ndarray)


def _entry_point(kernel, args):
    """The compiled function Numba's dispatcher ``kernel`` runs for ``args`` (None when
    it cannot be found: the dispatcher goes on being called)."""
    try:
        return kernel.overloads[tuple(map(kernel.typeof_pyval, args))].entry_point
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _writeable(a) -> bool:
    flags = getattr(a, "flags", None)
    return getattr(flags, "writeable", True)


def _converted(op: Op, names, arrays):
    """The arrays as the kernel takes them: (arrays, [(copy, original)] to write back)."""
    dtype = arrays[0].dtype
    out, written = [], []
    for name, a, type_, role in zip(names, arrays, op.types, op.roles):
        # labels: class ids as int64, one-hot rows as the first array's floats
        want = dtype if type_ == "f" or type_ == "l" and a.dtype.kind == "f" \
            else _F64 if type_ == "d" else _INT64
        if a.flags.c_contiguous and a.dtype == want:
            out.append(a)  # the common case: nothing to convert (NumPy or CuPy alike)
            continue
        xp = array_module(a)
        if role == "r":
            out.append(xp.ascontiguousarray(a, dtype=want))
            continue
        if a.dtype != want:
            raise TypeError(f"{name} has dtype {a.dtype}; it is updated in place and must "
                            f"have the dtype {want}")
        tmp = xp.ascontiguousarray(a)
        out.append(tmp)
        written.append((tmp, a))
    return out, written


# -- plans and sites


class Plan:
    """``reference(*arrays, *scalars)`` prepared for arrays of these types, shapes, dtypes
    and layouts (checked once, here): the path, the kernel, its launch shape, and, with
    ``reuse``, the output buffers it refills at every call (else each call's are new).
    ``plan(*arrays, scalars=...)`` runs it (``record``: the non-finite guard's, for ops that
    take one); ``matches(arrays)`` says whether these arrays may use it."""

    def __init__(self, reference, arrays, names=None, target=None, reuse=False):
        op = self.op = OPS[reference]
        self.reference, self.reuse = reference, reuse
        self.names = names or _NAMES[reference]
        self.stand_in = _stand_ins.get(type(arrays[0]))
        plain = [a.view(np.ndarray) for a in arrays] if self.stand_in else list(arrays)
        _check(op, self.names, plain)
        self.expect = [(type(a), a.shape, a.dtype, _layout(a)) for a in arrays]
        self.last = list(arrays)
        converted, written = _converted(op, self.names, plain)
        self.direct = not written and all(c is a for c, a in zip(converted, plain))
        self.switched = _switched
        self.target = target if target is not None else _target(plain[0])
        self.kernel = self.launch = self.launcher = None
        if self.target is not None and op.takes(converted):
            self.kernel = _kernel(op, self.target, plain[0].size)
        xp = array_module(plain[0])
        self.xp = xp
        self.no_record = xp.zeros(FLAGS, dtype=np.int64) if op.record else None
        self.run = self._run
        if self.kernel is None:
            self.outputs, self.work = [], []
            return
        dtype = self.dtype = plain[0].dtype
        self.output_shapes = op.outputs(converted)
        self.outputs = [xp.empty(shape, dtype) for shape in self.output_shapes] if reuse \
            else self.output_shapes
        self.work = [xp.zeros(shape, p.dtype(dtype)) for shape, p in op.work_params]
        kernel_in = [a.reshape(-1) for a in converted] if op.flat else converted
        if self.target == "cuda":
            self.launch = kernels(op.family, "cuda").launch(op.kernel, *kernel_in)
            if is_cupy(plain[0]):
                self.launcher = _cuda_jit().Launcher(self.kernel, self.launch)
        if self.target == "cpu" and self.direct and self.stand_in is None:
            self.key = (op.kernel, "cpu")
            _first_use(*self.key)
            self.reshape = op.flat and any(len(e[1]) != 1 for e in self.expect)
            self.count = _counts.setdefault(self.key, [0])  # shared by the key's plans
            self.entry = None  # the compiled function itself, looked up at the second call
            self.checked_record = None
            self.run = self._run_cpu

    def matches(self, arrays) -> bool:
        """True when ``arrays`` are the arrays of the last call, or of the same type, shape
        and dtype and C-contiguous, and no ``use()`` switched the path since the plan."""
        if len(arrays) != len(self.expect) or self.switched != _switched:
            return False
        for a, last, (kind, shape, dtype, layout) in zip(arrays, self.last, self.expect):
            if a is not last and (type(a) is not kind or a.shape != shape
                                  or a.dtype != dtype or _layout(a) != layout):
                return False
        return True

    def __call__(self, *arrays, scalars=(), record=None):
        return self.run(arrays, scalars, record)

    def _run_cpu(self, arrays, scalars, record):
        """The common case, kept short: NumPy arrays as the kernel takes them.

        From the third call on, the compiled function is called without Numba's dispatcher
        (which types every argument again): the plan has checked what the dispatcher would
        (the arrays' types, dtypes, dimensions and layouts are the plan's; outputs and
        workspaces are its own), and the compiled function converts the scalars itself.
        Finding it types every argument once more (more than a call costs), so a plan looks
        for it at its second call (a call site's), never for a one-off ``call``."""
        self.last = arrays
        if self.reshape:
            arrays = [a.reshape(-1) for a in arrays]
        outputs = self.outputs if self.reuse else [
            np.empty(shape, self.dtype) for shape in self.output_shapes]
        entry, learn = self.entry, True
        if self.no_record is None:
            tail = (*outputs, *self.work)
        else:
            if record is None:
                record = self.no_record
            if record is not self.checked_record:
                if _is_record(record):
                    self.checked_record = record
                else:  # the dispatcher's types (or error) for it, and nothing learnt
                    entry, learn = None, False
            tail = (*outputs, *self.work, record)
        if entry:
            entry(*arrays, *scalars, *tail)
        else:
            args = (*arrays, *map(float, scalars), *tail)
            self.kernel(*args)
            if learn and entry is not False:  # found at a second call: a call site's plan
                self.entry = _ONCE if entry is None else \
                    _entry_point(self.kernel, args) or False  # False: not found
        self.count[0] += 1
        _last[self.key[0]] = "cpu"
        return None if not outputs else outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run(self, arrays, scalars, record):
        op = self.op
        self.last = arrays
        if self.kernel is None or not self.direct:
            return self._slow(arrays, scalars, record)
        if self.stand_in is not None:
            arrays = [a.view(np.ndarray) for a in arrays]
            if record is not None:
                record = record.view(np.ndarray)
        if op.flat:
            arrays = [a if a.ndim == 1 else a.reshape(-1) for a in arrays]
        outputs = self.outputs
        if outputs and not self.reuse:
            outputs = [self.xp.empty(shape, self.dtype) for shape in self.output_shapes]
        args = [*arrays, *map(float, scalars), *outputs, *self.work]
        if self.no_record is not None:
            args.append(self.no_record if record is None else record)
        if self.target == "cpu":
            self.kernel(*args)
        elif not launch_cuda(self.kernel, self.launch, *args, launcher=self.launcher):
            self.kernel = None  # failed to build: the reference from now on
            return self._slow(arrays, scalars, record)
        _record(op.kernel, self.target)
        if self.stand_in is not None:
            self.stand_in.launched(op.kernel)
            outputs = [a.view(self.stand_in.array_type) for a in outputs]
        return None if not outputs else outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _slow(self, arrays, scalars, record):
        """Conversions and write-backs (arrays of other layouts or dtypes), or the reference."""
        op = self.op
        plain = [a.view(np.ndarray) for a in arrays] if self.stand_in else list(arrays)
        if self.kernel is not None:
            converted, written = _converted(op, self.names, plain)
            result = Plan(self.reference, converted, self.names, self.target)(
                *converted, scalars=scalars, record=record)
            for tmp, orig in written:
                orig[...] = tmp
            return result
        _record(op.kernel, "reference")
        converted, written = _converted(op, self.names, arrays)
        reads = [c if role == "r" else a for a, c, role in zip(arrays, converted, op.roles)]
        if record is None:
            return self.reference(*reads, *scalars)
        return _skipping(self.reference, reads, scalars, record, self.names)


def _skipping(rule, arrays, scalars, record, names):
    """The reference update ``rule(*arrays, *scalars)`` applied only where record[SKIP] is 0,
    decided on the device (each written array computed on a copy, then selected), with
    Adam's ``t`` counting only the updates applied."""
    xp = array_module(arrays[0])
    scalars = list(scalars)
    if "t" in names:
        k = names.index("t") - len(arrays)
        scalars[k] = scalars[k] - record[SKIPPED]  # a device scalar on CuPy: nothing read
    op = OPS[rule]
    copies = [a.copy() if role == "w" else a for a, role in zip(arrays, op.roles)]
    rule(*copies, *scalars)
    keep = record[SKIP:SKIP + 1] == 0
    for a, c, role in zip(arrays, copies, op.roles):
        if role == "w":
            xp.copyto(a, c, where=keep)


class Site:
    """A place that calls one op again and again (a layer's forward pass, an optimizer's
    update): ``site(*arrays, scalars=...)`` runs the op through the plan of the last call
    when the arrays fit it, else through a new one. Outputs are new arrays, or with
    ``site.reuse = True`` the plan's buffers, refilled by the site's next call."""

    __slots__ = ("reference", "names", "plan", "reuse")

    def __init__(self, reference, names=None):
        self.reference, self.names, self.plan, self.reuse = reference, names, None, False

    def __call__(self, *arrays, scalars=(), record=None):
        plan = self.plan
        if plan is None or plan.reuse is not self.reuse or not (
                plan.switched == _switched and len(arrays) == len(plan.last)
                and all(map(operator.is_, arrays, plan.last)) or plan.matches(arrays)):
            plan = self.plan = Plan(self.reference, arrays, self.names, reuse=self.reuse)
        return plan.run(arrays, scalars, record)


def call(reference, *arrays, scalars=(), target=None, names=None, record=None):
    """``reference(*arrays, *scalars)`` on the path the arrays call for (``target`` forces
    "cpu" or "cuda", for tests), with fresh outputs; returns what the reference returns."""
    return Plan(reference, arrays, names, target)(*arrays, scalars=scalars, record=record)


# -- the ops, with the reference's arguments (one-off calls; layers and optimizers hold Sites)


def optimizer_step(rule, p, g, state=(), scalars=(), clip=None, record=None):
    """``rule(p, g, *state, clip, *scalars)`` (an optimizer rule of ``accel.functional``);
    updates ``p`` and ``state`` in place, unless the guard's ``record`` says skip. ``clip``:
    the gradient-clipping array (default: factor 1, no clipping)."""
    names = ["p", "g", *(f"state[{k}]" for k in range(len(state))),
             *_NAMES[rule][2 + len(state):]]
    if clip is None:
        clip = F.clip_array(p)
    call(rule, p, g, *state, clip, scalars=scalars, names=names, record=record)


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
