"""The CUDA compile of every kernel (``jit``) and the launch shape of a grid-stride loop."""

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
