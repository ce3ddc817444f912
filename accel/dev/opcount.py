"""Count the array operations a training step issues: on a GPU, each is a kernel launch.

A step of a book-size network on CuPy is bound by launches (each ~5–10 µs), not by its
arithmetic. Build the network on ``backend()`` (NumPy arrays of a subclass that counts) and
count a step with ``training_step``, or any block with ``Count``::

    net = MultiLayerNet(784, [100] * 4, 10, backend=opcount.backend())
    count = opcount.training_step(net, optim.Adam(), x, t)
    count.total, count.by_scope        # 21, {"Affine+ReLU": 16, "Affine": 3, ...}

One operation is what CuPy launches one kernel for: a ufunc call (arithmetic, comparisons,
``matmul``, reductions such as ``sum`` and ``max``), a NumPy function or method that writes
a new array (``copy``, ``astype``, ``argmax``, a fancy-index read), an item assignment
(``a[...] = b``, also the store of ``a[s] += b``), a filled allocation (``zeros``,
``arange``, a random draw), and a fused kernel called through ``accel.dispatch`` (one
operation: its own work is not counted inside). Free: views (slices, ``reshape``, ``.T``),
``empty``, host scalars. NumPy's composite methods count their parts (``mean`` is a sum and
a divide, which CuPy fuses into one kernel): for those a count is an upper bound.

As strict as CuPy where an ndarray subclass can be: a NumPy array, list or tuple as an
operand of a device operation, a stack/concatenate of anything but device arrays, and an
array built from a list holding device arrays raise TypeError, as CuPy does. Reads of a
device value on the host (``float``, ``int``, ``bool``, ``item``, ``tolist``, formatting,
``accel.to_numpy``/``.get()``) wait for the device on a GPU: ``Count.host_reads`` counts them
(a conversion by ``np.asarray``, which CuPy refuses, cannot be seen by a subclass).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter

import numpy as np

from .. import dispatch
from ..backend import Backend

_counts: list = []  # the active Count objects, innermost last; each op is added to all


def _add(name: str) -> None:
    for count in _counts:
        count.ops[name] += 1
        count.by_scope[count.scope] += 1


def _read(kind: str) -> None:
    """A device value read on the host (a sync on a GPU)."""
    for count in _counts:
        count.host_reads[kind] += 1


# functions whose first argument is a sequence of arrays: CuPy takes only CuPy arrays there
_SEQUENCE_FUNCTIONS = {"stack", "concatenate", "vstack", "hstack", "dstack", "column_stack",
                       "block"}


def _refuse_host_operands(operands, what) -> None:
    """TypeError, as CuPy, for a NumPy array, list or tuple where a device array must be."""
    for a in operands:
        if isinstance(a, (np.ndarray, list, tuple)) and not isinstance(a, CountingArray):
            raise TypeError(f"Unsupported type {type(a)} in {what}: CuPy refuses host data as "
                            "an operand of a device operation (upload it with xp.asarray)")


def _refuse_non_device(sequence, what) -> None:
    """TypeError, as CuPy, unless every element of ``sequence`` is a device array."""
    for a in sequence:
        if not isinstance(a, CountingArray):
            raise TypeError(f"{what}: CuPy takes only CuPy arrays here, got {type(a)}")


def _refuse_device_in_list(obj, what) -> None:
    """TypeError, as CuPy, for a list/tuple holding device arrays (an implicit download)."""
    if isinstance(obj, (list, tuple)):
        for v in obj:
            if isinstance(v, CountingArray):
                raise TypeError(f"{what}: implicit conversion to a NumPy array is not allowed "
                                "(CuPy refuses a list holding device arrays; use xp.stack)")
            _refuse_device_in_list(v, what)


def _plain(a):
    """The ndarray under a CountingArray (same memory); anything else as it is."""
    if isinstance(a, CountingArray):
        return a.view(np.ndarray)
    if isinstance(a, (tuple, list)):
        return type(a)(_plain(v) for v in a)
    return a


def _wrap(a):
    """NumPy results as CountingArray (scalars as 0-d arrays, as CuPy returns them)."""
    if type(a) is np.ndarray:
        return a.view(CountingArray)
    if isinstance(a, np.generic):
        return np.asarray(a).view(CountingArray)
    if isinstance(a, tuple):
        return tuple(_wrap(v) for v in a)
    return a


def _new(result, inputs) -> bool:
    """True when ``result`` holds new data (an array that is no view of an input)."""
    if isinstance(result, (tuple, list)):
        return any(_new(r, inputs) for r in result)
    if not isinstance(result, np.ndarray):
        return isinstance(result, np.generic)  # a computed value; Python scalars are metadata
    return not any(isinstance(a, np.ndarray) and np.may_share_memory(_plain(result), _plain(a))
                   for a in inputs)


class CountingArray(np.ndarray):
    """An ndarray whose operations are counted in the active ``Count`` (see the module)."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        _refuse_host_operands([*inputs, *(out or ())], name)
        _add(name)
        if out is not None:
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:  # the caller's own output arrays, as NumPy returns them
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in _SEQUENCE_FUNCTIONS:
            _refuse_non_device(args[0], func.__name__)
        else:  # tuples and lists here are shapes and axes; a NumPy array is host data
            _refuse_host_operands([a for a in (*args, *kwargs.values())
                                   if isinstance(a, np.ndarray)], func.__name__)
        args, kwargs = _plain(args), {k: _plain(v) for k, v in kwargs.items()}
        result = func(*args, **kwargs)
        if _new(result, [*args, *kwargs.values()]):
            _add(func.__name__)
        return _wrap(result)

    def __getitem__(self, index):
        result = super().__getitem__(index)
        if isinstance(result, np.ndarray) and _new(result, [self]):
            _add("gather")  # advanced indexing copies; basic indexing is a view
        return _wrap(result) if isinstance(result, np.generic) else result

    def __setitem__(self, index, value):
        _add("setitem")
        super().__setitem__(index, _plain(value))

    # reads of a device value on the host: counted (each waits for the device on a GPU)

    def __float__(self):
        _read("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        _read("int")
        return int(self.view(np.ndarray))

    def __index__(self):
        _read("index")
        return self.view(np.ndarray).__index__()

    def __bool__(self):
        _read("bool")
        return bool(self.view(np.ndarray))

    def __format__(self, spec):
        _read("format")
        return format(self.view(np.ndarray), spec)

    def __str__(self):
        _read("str")
        return str(self.view(np.ndarray))

    def __repr__(self):
        _read("repr")
        return repr(self.view(np.ndarray)).replace("array", "CountingArray", 1)

    def item(self, *args):
        _read("item")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        _read("tolist")
        return self.view(np.ndarray).tolist()

    def get(self):
        """A NumPy copy, as CuPy's ``get()`` (what ``accel.to_numpy`` calls)."""
        _read("get")
        return self.view(np.ndarray).copy()


def _counted_method(name):
    base = getattr(np.ndarray, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        result = base(self.view(np.ndarray), *_plain(args), **kwargs)
        if _new(result, [self]):
            _add(name)
        return _wrap(result)
    return method


# ndarray methods written in C that compute without passing through a ufunc
for _name in ("copy", "astype", "argmax", "argmin", "dot", "take", "flatten", "cumsum",
              "sort", "fill", "nonzero"):
    setattr(CountingArray, _name, _counted_method(_name))


# a fused op on counting arrays runs the CPU kernel, as one operation (its own work unseen)
dispatch.register_stand_in(dispatch.StandIn(CountingArray, lambda kernel: _add(f"kernel {kernel}")))


class _CountingNumpy:
    """``numpy`` as a backend's ``xp``: array creation returns CountingArray; a filled
    allocation (anything but ``empty``) counts as one operation."""

    FREE = {"empty", "empty_like", "asarray", "ascontiguousarray", "asanyarray"}

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type) or name in ("dtype", "errstate"):
            return attr

        @functools.wraps(attr)
        def create(*args, **kwargs):
            if name in _SEQUENCE_FUNCTIONS and args:
                _refuse_non_device(args[0], name)
                return attr(*args, **kwargs)  # counted by CountingArray itself
            if any(isinstance(a, CountingArray) for a in (*args, *kwargs.values())):
                return attr(*args, **kwargs)  # counted by CountingArray itself
            for a in (*args, *kwargs.values()):
                _refuse_device_in_list(a, name)
            result = attr(*args, **kwargs)
            if name not in self.FREE and isinstance(result, np.ndarray):
                _add(name)
            return _wrap(result)
        return create


class _CountingGenerator:
    """A NumPy Generator whose draws are counted (one operation each) and counting."""

    def __init__(self, rng):
        self._rng = rng

    def __getattr__(self, name):
        attr = getattr(self._rng, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def draw(*args, **kwargs):
            result = attr(*args, **kwargs)
            if isinstance(result, np.ndarray):
                _add(f"random.{name}")
            return _wrap(result)
        return draw


class CountingBackend(Backend):
    """The NumPy backend, with every array a CountingArray."""

    def __init__(self):
        super().__init__("numpy", _CountingNumpy())

    def asarray(self, a, dtype=None):
        return _wrap(np.asarray(_plain(a), dtype=dtype))

    def rng(self, seed=None):
        return _CountingGenerator(np.random.default_rng(seed))


def backend() -> CountingBackend:
    """A backend to build a network on whose operations ``Count`` should see."""
    return CountingBackend()


class Count:
    """Operations issued inside ``with Count() as c:`` — ``c.total``, ``c.ops`` (per
    operation name), ``c.by_scope`` (per scope, see ``scope``), and ``c.host_reads`` (device
    values read on the host, per kind: "float", "bool", "item", "get", ...)."""

    def __init__(self):
        self.ops, self.by_scope, self.host_reads = Counter(), Counter(), Counter()
        self.scope = "other"

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __enter__(self):
        _counts.append(self)
        return self

    def __exit__(self, *exc):
        _counts.remove(self)

    @contextlib.contextmanager
    def as_scope(self, name: str):
        """Count the block's operations under ``name``."""
        before, self.scope = self.scope, name
        try:
            yield
        finally:
            self.scope = before

    @contextlib.contextmanager
    def per_layer(self, layers):
        """Count each layer's forward and backward under the layer's name (an Affine and
        its fused activation as "Affine+ReLU")."""
        patched = []
        for layer in layers:
            name = _label(layer)
            for method in ("forward", "backward"):
                patched.append((layer, method))
                setattr(layer, method, self._scoped(getattr(layer, method), name))
        try:
            yield
        finally:
            for layer, method in patched:
                delattr(layer, method)

    def _scoped(self, fn, name):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with self.as_scope(name):
                return fn(*args, **kwargs)
        return run


def _label(layer) -> str:
    parts = [getattr(layer, "affine", None), getattr(layer, "activation", None)]
    if all(parts):
        return "+".join(type(p).__name__ for p in parts)
    return type(layer).__name__


def training_step(net, optimizer, x, t) -> Count:
    """The operations of one training step — ``net.loss_and_grads(x, t)`` then
    ``optimizer.update`` — of a network built on ``backend()``, per layer: ``by_scope``
    has each layer type, "network" (weight decay) and "optimizer"."""
    if not isinstance(net.backend, CountingBackend):
        raise ValueError("net must be built with backend=opcount.backend() to be counted, "
                         f"got backend={net.backend!r}")
    x, t = net.prepare(x, t)
    with Count() as count:
        with count.as_scope("network"), count.per_layer([*net.passes, net.last_layer]):
            _, grads = net.loss_and_grads(x, t)
        with count.as_scope("optimizer"):
            optimizer.update(net.params, grads)
    return count
