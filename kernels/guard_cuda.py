"""The non-finite guard of a training step on a CUDA GPU, in one launch: the twin of
``guard_cpu`` (same arguments, the same record; layout: ``guard_record``).

Every block adds its grid-stride share of Σg in float64, a shared-memory tree adds the
block's threads, and thread 0 adds that into ``acc[0]`` (atomically), fences, and takes a
``ticket``. The block that takes the last ticket has every other block's sum: it adds the
loss and the running statistics, decides, and writes the record, the running statistics
(put back from ``saved``, or copied into it) and, at the first bad step, which blocks held
NaN/Inf (a scan that only a bad step pays for); then it zeroes ``acc`` and ``ticket`` for the
next launch. So the decision stays on the device: nothing is read back.
"""

import math

from .cuda_jit import cuda, float64, int32, jit, tree_sum
from .guard_record import FIRST, FLAGS, GRADIENT, LOSS, SKIP, SKIPPED, STATISTICS, WHAT

THREADS = 256  # a power of 2 (the tree)
MAX_BLOCKS = 64  # the blocks' sums meet in one atomic add each


@jit
def nonfinite_guard(loss, g, g_starts, buffers, buffer_starts, saved, record, iteration,
                    sticky, acc, ticket):
    s = cuda.shared.array(THREADS, float64)
    flags = cuda.shared.array(3, int32)  # last block?, gradient found, statistics found
    tx = cuda.threadIdx.x
    total = 0.0
    for part in range(2):  # 0: this block's share of Σg; 1 (the last block): Σbuffers
        value = 0.0
        if part == 0:
            for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
                value += g[i]
        else:
            for i in range(tx, buffers.size, THREADS):
                value += buffers[i]
        s[tx] = value
        tree_sum(s, tx, THREADS)
        if part == 0:
            if tx == 0:
                cuda.atomic.add(acc, 0, s[0])
                cuda.threadfence()
                flags[0] = cuda.atomic.add(ticket, 0, 1) == cuda.gridDim.x - 1
                flags[1] = 0
                flags[2] = 0
            cuda.syncthreads()
            if not flags[0]:
                return
        else:  # every block's sum is in acc now
            total = s[0] + cuda.atomic.add(acc, 0, 0.0) + loss[0]
    bad = not math.isfinite(total)
    first = bad and record[FIRST] == 0
    if first:  # which blocks hold NaN/Inf: a scan only a bad step pays for
        for which in range(2):
            a, starts = (g, g_starts) if which == 0 else (buffers, buffer_starts)
            at = FLAGS if which == 0 else FLAGS + g_starts.size - 1
            for i in range(tx, a.size, THREADS):
                if not math.isfinite(a[i]):
                    b = 0
                    while starts[b + 1] <= i:
                        b += 1
                    record[at + b] = 1
                    flags[1 + which] = 1
    skip = bad or (sticky and record[FIRST] != 0)
    cuda.syncthreads()  # the flags are set, and every thread has read record[FIRST]
    if tx == 0:
        if first:
            what = 0 if math.isfinite(loss[0]) else LOSS
            if flags[1]:
                what |= GRADIENT
            if flags[2]:
                what |= STATISTICS
            record[FIRST] = int(iteration)
            record[WHAT] = what
        if skip:
            record[SKIP] = 1
            slot = FLAGS + g_starts.size - 1 + buffer_starts.size - 1 + record[SKIPPED]
            if slot < record.size:
                record[slot] = int(iteration)
            record[SKIPPED] += 1
        else:
            record[SKIP] = 0
        acc[0] = 0.0
        ticket[0] = 0
    for i in range(tx, buffers.size, THREADS):
        if skip:
            buffers[i] = saved[i]
        else:
            saved[i] = buffers[i]


KERNELS = {"nonfinite_guard": nonfinite_guard}


def launch(name, loss, g, *arrays):
    """(blocks, threads): a grid-stride loop over g, in at most MAX_BLOCKS blocks."""
    return max(1, min(-(-g.size // THREADS), MAX_BLOCKS)), THREADS
