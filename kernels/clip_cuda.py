"""Gradient-norm clipping's factor on a CUDA GPU, in one launch: the twin of ``clip_cpu`` (same
arguments, the same result in clip).

Every block adds its grid-stride share of Σg² in float64, a shared-memory tree adds the
block's threads, and thread 0 writes the block's sum to ``part[block]``, fences, and takes a
``ticket``. The block that takes the last ticket adds clip[1] and the blocks' sums in block
order (so, for one grid, the same bits every run), writes clip[0] = min(1, max_norm/(√Σ +
eps)) when ``last`` (else keeps the sum in clip[1] for the next array's launch), and zeroes
the ticket for the next launch. The factor stays on the device: nothing is read back.
"""

import math

from .cuda_jit import cuda, float64, int32, jit, tree_sum

THREADS = 256  # a power of 2 (the tree)
MAX_BLOCKS = 64  # at most part.size (accel.dispatch's workspace for this op)


@jit
def clip_factor(g, clip, max_norm, eps, last, part, ticket):
    s = cuda.shared.array(THREADS, float64)
    is_last = cuda.shared.array(1, int32)
    tx = cuda.threadIdx.x
    value = 0.0
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        x = float64(g[i])  # squares in float64, as the reference's
        value += x * x
    s[tx] = value
    tree_sum(s, tx, THREADS)
    if tx == 0:
        part[cuda.blockIdx.x] = s[0]
        cuda.threadfence()
        is_last[0] = cuda.atomic.add(ticket, 0, 1) == cuda.gridDim.x - 1
    cuda.syncthreads()
    if is_last[0] and tx == 0:
        total = clip[1]
        for b in range(cuda.gridDim.x):
            total += cuda.atomic.add(part, b, 0.0)  # read past any cache: every block's sum
        if last:
            factor = max_norm / (math.sqrt(total) + eps)
            clip[0] = 1.0 if factor > 1.0 else factor  # NaN stays NaN, as torch's clamp
            clip[1] = 0.0
        else:
            clip[1] = total
        ticket[0] = 0


KERNELS = {"clip_factor": clip_factor}


def launch(name, g, *arrays):
    """(blocks, threads): a grid-stride loop over g, in at most MAX_BLOCKS blocks."""
    return max(1, min(-(-g.size // THREADS), MAX_BLOCKS)), THREADS
