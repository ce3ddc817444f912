"""The one import of Numba's CUDA target, the CUDA compile of every kernel (``jit``) and the
launch shape of a grid-stride loop.

Every CUDA module of accel takes ``cuda`` from here, so a switch of CUDA compiler is this one
place: ``ACCEL_CUDA_JIT=mlir`` compiles with numba-cuda-mlir (``from numba_cuda_mlir import
cuda``; tried by ``benchmarks/gpu_check.py`` where it is installed), the default with
numba-cuda.
"""

import os

import numpy as np

# numba-cuda registers ``np.row_stack``, which NumPy 2.5 removed (it was an alias of
# ``np.vstack``): with NumPy 2.5 every kernel compile raised AttributeError. numba-cuda is in
# maintenance mode (numba-cuda #902) and #907/#916, which report this, were closed unfixed;
# so restore the alias before numba.cuda loads its typing. NumPy < 2.5 keeps its own.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import float64  # noqa: E402, F401  (after the alias above)

if os.environ.get("ACCEL_CUDA_JIT", "").strip().lower() == "mlir":
    from numba_cuda_mlir import cuda
else:
    from numba import cuda

jit = cuda.jit(cache=True)

# Grid-stride loops cover any size with any grid; more blocks than this only add scheduling.
THREADS_PER_BLOCK = 256
MAX_BLOCKS = 4096


def grid_stride(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` items (0 blocks: nothing to do)."""
    if n == 0:
        return 0, THREADS_PER_BLOCK
    return max(1, min(-(-n // THREADS_PER_BLOCK), MAX_BLOCKS)), THREADS_PER_BLOCK
