"""The one import of Numba's CUDA target, the CUDA compile of every kernel (``jit``) and the
launch shape of a grid-stride loop.

Every CUDA module of accel takes ``cuda`` from here, so a switch of CUDA compiler is this one
place: ``ACCEL_CUDA_JIT=mlir`` compiles with numba-cuda-mlir (``from numba_cuda_mlir import
cuda``; tried by ``benchmarks/gpu_check.py`` where it is installed), the default with
numba-cuda.
"""

import ctypes
import os
import warnings

import numpy as np

# numba-cuda registers ``np.row_stack``, which NumPy 2.5 removed (it was an alias of
# ``np.vstack``): with NumPy 2.5 every kernel compile raised AttributeError. numba-cuda is in
# maintenance mode (numba-cuda #902) and #907/#916, which report this, were closed unfixed;
# so restore the alias before numba.cuda loads its typing. NumPy < 2.5 keeps its own.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import float64, int32  # noqa: E402, F401  (after the alias above)

if os.environ.get("ACCEL_CUDA_JIT", "").strip().lower() == "mlir":
    from numba_cuda_mlir import cuda
else:
    from numba import cuda

jit = cuda.jit(cache=True)


@cuda.jit(device=True, inline="always")
def tree_sum(s, lane, lanes):
    """s[0] = Σ s[0:lanes], added pairwise in a block's shared memory: called by every thread
    of the block after it wrote s[lane]; ``lanes`` a power of 2. Ends synchronized. For the
    column sums of a (rows, cols) tile, ``s[:, column]`` with lane = the thread's row.

    inline="always": spliced into each kernel's IR, so a kernel compiles without a GPU (a
    called device function asks the driver for the compute capability), with the registers
    of the written-out loop (±2, no spills: ``benchmarks/gpu_check.py --compile-only``). A
    kernel's on-disk cache does not see edits made here: clear ``kernels/__pycache__``."""
    cuda.syncthreads()
    step = lanes // 2
    while step > 0:
        if lane < step:
            s[lane] += s[lane + step]
        cuda.syncthreads()
        step //= 2

# Grid-stride loops cover any size with any grid; more blocks than this only add scheduling.
THREADS_PER_BLOCK = 256
MAX_BLOCKS = 4096


def grid_stride(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` items (0 blocks: nothing to do)."""
    if n == 0:
        return 0, THREADS_PER_BLOCK
    return max(1, min(-(-n // THREADS_PER_BLOCK), MAX_BLOCKS)), THREADS_PER_BLOCK


class Launcher:
    """Launches one kernel with one launch shape (blocks, threads) on a stream given by its
    handle, with less host work per call than ``kernel[blocks, threads, stream](*args)``.

    Default: numba-cuda's launch, with its launch configuration made once per stream (making
    it checks occupancy and may warn, at every ``kernel[...]``). ``ACCEL_CUDA_LAUNCH=direct``:
    the kernel is compiled once for the first call's argument types and launched through
    cuda.core with its parameters laid out here as numba-cuda lays them out (an array is
    meminfo, parent, size, itemsize, data, shape, strides): no typing and no array
    conversion per call. Which costs less is measured by ``benchmarks/gpu_check.py``.
    """

    def __init__(self, kernel, launch, how=None):
        self.kernel, (self.blocks, self.threads) = kernel, launch
        self.how = how or os.environ.get("ACCEL_CUDA_LAUNCH", "numba").strip().lower()
        if self.how not in ("numba", "direct"):
            raise ValueError(f"ACCEL_CUDA_LAUNCH={self.how!r}: use 'numba' or 'direct'")
        self.configs, self.streams, self.compiled = {}, {}, None

    def __call__(self, stream: int, args) -> None:
        if self.how == "direct":
            self._direct(stream, args)
            return
        config = self.configs.get(stream)
        if config is None:
            with warnings.catch_warnings():  # a book-size layer is a small grid on purpose
                warnings.simplefilter("ignore")
                config = self.configs[stream] = self.kernel[
                    self.blocks, self.threads, cuda.external_stream(stream) if stream else 0]
        config(*args)

    def _direct(self, stream, args):
        from cuda.core import LaunchConfig, Stream, launch

        if self.compiled is None:
            from numba import types

            argtypes = tuple(self.kernel.typeof_pyval(a) for a in args)
            compiled = self.kernel.compile(argtypes)
            self.function = compiled._codelibrary.get_cufunc().kernel
            self.scalars = [None if isinstance(t, types.Array) else _CTYPES[str(t)]
                            for t in argtypes]
            self.config = LaunchConfig(grid=self.blocks, block=self.threads)
            self.compiled = compiled
        core_stream = self.streams.get(stream)
        if core_stream is None:
            core_stream = self.streams[stream] = Stream.from_handle(stream)
        params = []
        for a, ctype in zip(args, self.scalars):
            if ctype is None:
                params += [0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides]
            else:
                params.append(ctype(a))
        launch(core_stream, self.config, self.function, *params)


_CTYPES = {"float64": ctypes.c_double, "float32": ctypes.c_float, "int64": ctypes.c_int64}
