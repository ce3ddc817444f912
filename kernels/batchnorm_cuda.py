"""Batch norm over (N, D) on a CUDA GPU: training forward, eval forward, backward.

The CUDA twins of ``batchnorm_cpu``: the same arguments (the reference's, then the output
arrays), names and arithmetic lines; the loops differ, each walking memory the way its device
likes it.

The training forward and the backward are column reductions followed by an elementwise pass.
A block owns a tile of COLS columns with ROWS row lanes per column (COLS × ROWS threads):
thread (tx, ty) walks the rows ty, ty + ROWS, ... of column j = blockIdx·COLS + tx, so the
COLS threads of a warp read COLS neighbouring addresses of one row (coalesced). Each thread
adds its rows in float64; a shared-memory tree adds the ROWS partial sums of each column (as
``layers_cuda.activation_backward_bias``); a thread of the column's lane 0 finishes the
column's statistics and writes them; after a barrier, all the tile's threads write their rows
of the output (the block owns whole columns, so it has the sums it needs). One launch per op.

- ``batchnorm_forward_train``: Σ(x − k), Σ(x − k)² around the shift k = x[0, j] → mean,
  invstd, running statistics; then out.
- ``batchnorm_backward``: Σdy, Σdy·x̂ → dbeta, dgamma; then dx.
- ``batchnorm_forward_eval``: no reduction, a grid-stride loop over the N·D elements.

Parallelism for the book's shapes (N = 100..1024 rows, D = 100..4096 units), COLS = 32,
ROWS = 16:

- forward_train, backward: ⌈D/32⌉ blocks × 512 threads, each thread ⌈N/16⌉ rows (7 at
  N = 100, 64 at N = 1024): D = 100 → 4 × 512 = 2 048 threads; D = 1024 → 32 × 512;
  D = 4096 → 128 × 512 = 65 536 threads.
- forward_eval: min(⌈N·D/256⌉, 4096) blocks × 256 threads, 1..4 elements each: 100×100 →
  40 × 256; 1024×100 → 400 × 256; 1024×4096 → 4096 × 256.

At D = 100 the two reductions fill 4 multiprocessors of an A100's 108 (a column split over
several blocks would need a second pass or atomics); from D ≈ 3 500 up they have a block for
every multiprocessor. Not measured on a GPU yet (docs/gpu.md).

How the twins differ: the CPU kernel (``batchnorm_cpu``) splits the rows into contiguous
chunks, adds a chunk's rows a few at a time into float64 sums per column, and adds the chunks'
sums in chunk order; here ROWS lanes each add every ROWS-th row and a tree adds the lanes, so
the float64 sums are added in another order (last-bit differences after rounding to float32).
The formulas, the shift k = x[0, j], the float64 accumulation and the elementwise arithmetic
(in x's dtype, the reference's order) are the same.
"""

import math

import numpy as np

from .cuda_jit import cuda, float64, grid_stride, jit, tree_sum

COLS, ROWS = 32, 16  # the reduction block: COLS columns × ROWS row lanes (ROWS a power of 2)


@jit
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                            out, mean, invstd):
    n, d = x.shape
    s = cuda.shared.array((ROWS, COLS), float64)  # per lane: Σ(x − k), Σ(x − k)² of column j
    q = cuda.shared.array((ROWS, COLS), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * COLS + tx
    sj, qj = 0.0, 0.0
    if j < d:
        for i in range(ty, n, ROWS):
            xk = np.float64(x[i, j]) - x[0, j]
            sj += xk
            qj += xk * xk
    s[ty, tx] = sj
    q[ty, tx] = qj
    tree_sum(s[:, tx], ty, ROWS)
    tree_sum(q[:, tx], ty, ROWS)
    if ty == 0 and j < d:
        sj, qj = s[0, tx], q[0, tx]
        var = (qj - sj * sj / n) / n
        mean[j] = x[0, j] + sj / n
        invstd[j] = 1 / math.sqrt(var + eps)
        running_mean[j] = momentum * running_mean[j] + (1 - momentum) * mean[j]
        running_var[j] = momentum * running_var[j] + (1 - momentum) * var
    cuda.syncthreads()  # mean, invstd of the tile's columns are written
    if j < d:
        scale = gamma[j] * invstd[j]
        for i in range(ty, n, ROWS):
            out[i, j] = (x[i, j] - mean[j]) * scale + beta[j]


@jit
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    n, d = x.shape
    for k in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i, j = k // d, k % d
        scale = gamma[j] / math.sqrt(running_var[j] + eps)
        out[i, j] = (x[i, j] - running_mean[j]) * scale + beta[j]


@jit
def batchnorm_backward(dy, x, gamma, mean, invstd, dgamma, dbeta, dx):
    n, d = x.shape
    f = x.dtype.type
    s = cuda.shared.array((ROWS, COLS), float64)  # per lane: Σdy, Σdy·x̂ of column j
    q = cuda.shared.array((ROWS, COLS), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * COLS + tx
    sj, qj = 0.0, 0.0
    if j < d:
        for i in range(ty, n, ROWS):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            sj += dy[i, j]
            qj += dy[i, j] * xhat
    s[ty, tx] = sj
    q[ty, tx] = qj
    tree_sum(s[:, tx], ty, ROWS)
    tree_sum(q[:, tx], ty, ROWS)
    if ty == 0 and j < d:
        dbeta[j] = s[0, tx]
        dgamma[j] = q[0, tx]
    cuda.syncthreads()  # dbeta, dgamma of the tile's columns are written
    if j < d:
        scale = gamma[j] * invstd[j] / f(n)
        for i in range(ty, n, ROWS):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            dx[i, j] = scale * (f(n) * dy[i, j] - dbeta[j] - xhat * dgamma[j])


KERNELS = {f.__name__: f for f in (batchnorm_forward_train, batchnorm_forward_eval,
                                   batchnorm_backward)}


def launch(name, x, *arrays):
    """(blocks, threads) of kernel ``name``: a block of COLS × ROWS threads per tile of COLS
    columns for the reductions, a grid-stride loop over the elements for the eval forward."""
    n, d = x.shape
    if name == "batchnorm_forward_eval":
        return grid_stride(n * d)
    return -(-d // COLS), (COLS, ROWS)
