"""How many threads accel's work uses: the one place for the policy.

A matrix product's threads pay only when the product is large: a book-size step's products
(128×784 by 784×100 is 20 MFLOP) take a fraction of a millisecond on one core, and a second
BLAS thread, when another process keeps a core busy, waits for a scheduler time slice, many
times longer than the product (``benchmarks/speed/thread_policy.py`` measures it). OpenBLAS also
splits a product's sums by its thread count, so one seed gives other bits with 1 thread than
with 2. So accel runs every product below ``SERIAL_MAX_FLOP`` on one BLAS thread, whatever
the core count (a fixed threshold, so those results do not depend on it), and larger ones
on the threads NumPy's BLAS library had before accel set it: the user's
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or threadpoolctl limit (accel only ever lowers
it). The fused CPU kernels run on Numba's threads only above ``accel.dispatch.PARALLEL_MIN``
elements, and split their sums by the data's size, not by the thread count.

A network applies the policy when a pass over a batch starts (``MultiLayerNet.products``),
from its layer sizes and the batch: one look at the library's count (well under a
microsecond), and a change only when the count is not the one wanted. It leaves the count
set, as a process-wide setting (``torch.set_num_threads`` is one too): NumPy's own products
outside accel then run on one thread as well until accel runs a large one. A count changed
by someone else since accel last set it (threadpoolctl, ``openblas_set_num_threads``) is
taken as the new upper bound. ``with accel.blas_threads(n):`` fixes the count for a block,
the policy aside. Only NumPy's BLAS is touched (torch's or another library's is not).
"""

from __future__ import annotations

import contextlib
import os
import threading

from . import checks

# Products of fewer floating-point operations (2·n·k·m) run on one BLAS thread (why, and the
# measurements behind the threshold: docs/performance.md, "Threads").
SERIAL_MAX_FLOP = 2e9

_libs = None  # threadpoolctl's controllers of NumPy's BLAS, found once
_lock = threading.Lock()
_upper = None  # the count before accel set it (or as someone else set it since)
_applied = None  # the count accel set last
_fixed = 0  # > 0 inside ``blas_threads``: the user's count, left alone by the policy


def _blas():
    """threadpoolctl's controllers of the BLAS library NumPy uses (found once)."""
    global _libs
    if _libs is None:
        import numpy as np
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas").lib_controllers
        home = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy")
        mine = [lib for lib in blas if lib.filepath.startswith(home)]
        _libs = mine or blas  # a NumPy linked against a system BLAS: that one
    return _libs


def blas_threads_for(flop: float) -> int | None:
    """The BLAS threads for products of ``flop`` operations: 1 below SERIAL_MAX_FLOP, else
    None (as many as the library was given)."""
    return 1 if flop < SERIAL_MAX_FLOP else None


def apply(flop: float) -> None:
    """Set NumPy's BLAS for products of at most ``flop`` operations (see the module)."""
    global _upper, _applied
    if _fixed:
        return
    libs = _blas()
    if not libs:
        return
    with _lock:
        now = libs[0].get_num_threads()
        if _applied is None or now != _applied:  # first use, or set by someone else since
            _upper = now
        want = 1 if flop < SERIAL_MAX_FLOP else _upper
        if now != want:
            for lib in libs:
                lib.set_num_threads(want)
        _applied = want


def blas_threads(n: int = 1):
    """Fix NumPy's BLAS to ``n`` threads inside the block, whatever the work's size (the
    policy steps aside), and put the count back afterwards. ``n`` is checked at the call."""
    return _fixed_threads(checks.integer("n", n, low=1, high=2**31 - 1))  # a C int in BLAS


@contextlib.contextmanager
def _fixed_threads(n: int):
    global _fixed
    libs = _blas()
    before = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(n)
    _fixed += 1
    try:
        yield
    finally:
        _fixed -= 1
        for lib, m in zip(libs, before):
            lib.set_num_threads(m)
