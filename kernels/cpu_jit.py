"""The two CPU compiles of every kernel: parallel (``jit``) and serial (``serial_twins``)."""

import os
import types

import numba
from numba import njit

# Numba's threads for the parallel kernels: the "workqueue" layer, unless NUMBA_THREADING_LAYER
# says otherwise. With another process keeping one core busy, a parallel kernel on the
# OpenMP layer waited ~12 ms (a scheduler time slice) at every size, the workqueue layer's at
# most a few tenths of a millisecond more than the serial kernel (benchmarks/speed/thread_policy.py,
# "thresholds"). Numba picks its layer at the first parallel call, so this is set before.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

# error_model="numpy": a float division by zero gives inf/nan (as NumPy) instead of a Python
# exception check in the loop, which would stop the loop from vectorizing.
jit = njit(parallel=True, cache=True, error_model="numpy")
# a sum whose terms LLVM may add in vector lanes (fastmath "reassoc" only: NaN and Inf still
# propagate): the order is fixed by the compiled loop, not by the number of threads
jit_sum = njit(parallel=True, cache=True, error_model="numpy", fastmath={"reassoc"})


def serial_twins(kernels: dict) -> dict:
    """name → the serial compile of each kernel of ``kernels``."""
    return {name: serial(k) for name, k in kernels.items()}


def serial(kernel):
    """The same kernel compiled without threads (prange runs as range), cached under its own
    name: for small arrays, where waking the thread pool costs more than the loop (and, on a
    busy machine, can wait for a scheduler time slice)."""
    py = kernel.py_func
    fn = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial",
                            py.__defaults__, py.__closure__)
    fn.__qualname__ = py.__qualname__ + "_serial"
    return njit(cache=True, error_model="numpy",
                fastmath=kernel.targetoptions.get("fastmath", False))(fn)
