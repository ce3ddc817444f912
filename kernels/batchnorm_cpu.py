"""Batch norm over (N, D) on the CPU: training forward, eval forward, backward.

Each kernel takes the arguments of its ``xp`` reference in ``accel.functional`` followed by its
output arrays (allocated by ``accel.dispatch``), and computes what its CUDA twin in
``batchnorm_cuda`` does with the same arithmetic lines; the loops differ, each walking memory
the way its device likes it. Here each parallel iteration streams a contiguous chunk of rows
(at least ROWS_PER_CHUNK, at most MAX_CHUNKS chunks), keeps per-chunk float64 column sums,
and the chunks' sums are added afterwards in chunk order; then a parallel loop over rows
writes the output. So x is read twice in the forward pass (statistics, output) and x, dy
twice in the backward pass; at the book's sizes (1024 × 4096 float32 = 16 MB) the second read
can come from the 32 MB L3 cache of this project's machine.

How the twins differ: the CUDA kernels give a block a tile of 32 columns and split each
column's rows over 16 lanes (row i to lane i mod 16), whose float64 partial sums a shared-
memory tree adds, and the block then writes its columns' output; here the rows are split into
contiguous chunks. Both add the same float64 terms, in another order (last-bit differences
after rounding to float32).

Column tiles that stay in L2 (a prange over tiles of whole columns: statistics, then output
while the tile is cached, one parallel region per kernel) were measured against this layout
at 1024 × 4096 float32, fwd + bwd, interleaved in one process: 6.1 ms against 4.8 ms
(medians of per-round minima; bandwidth roofline 1.4 ms). A tile's rows are short runs
(1-2 KB) a row stride apart, which (our reading of it) the hardware prefetchers stream worse
than whole rows, while the second read they save can hit L3 here. They were more robust to a
busy core (one barrier per kernel instead of three: worst round 16 ms against 60 ms).

Column statistics are accumulated in float64 around a shift k = x[0, j] (a sample of the
column, so Σ(x − k)² − (Σ(x − k))²/N does not cancel); elementwise math is in x's dtype, in
the reference's order. dx uses the two-reduction formula
dx = γ·invstd/N·(N·dy − Σdy − x̂·Σ(dy·x̂)).
"""

import math

import numpy as np
from numba import njit, prange

from .cpu_jit import jit, serial_twins

ROWS_PER_CHUNK = 64  # at least this many rows per parallel chunk of the column sums
MAX_CHUNKS = 64


@njit(cache=True)
def _chunks(n):
    """Number of row chunks for the column sums."""
    return max(1, min(n // ROWS_PER_CHUNK, MAX_CHUNKS))


@jit
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                            out, mean, invstd):
    n, d = x.shape
    nc = _chunks(n)
    s = np.zeros((nc, d))  # per chunk: Σ(x − k), Σ(x − k)² of each column
    q = np.zeros((nc, d))
    scale = np.empty(d, x.dtype)
    for c in prange(nc):
        for i in range(c * n // nc, (c + 1) * n // nc):
            for j in range(d):
                xk = np.float64(x[i, j]) - x[0, j]
                s[c, j] += xk
                q[c, j] += xk * xk
    for j in prange(d):
        sj, qj = 0.0, 0.0
        for c in range(nc):
            sj += s[c, j]
            qj += q[c, j]
        var = (qj - sj * sj / n) / n
        mean[j] = x[0, j] + sj / n
        invstd[j] = 1 / math.sqrt(var + eps)
        running_mean[j] = momentum * running_mean[j] + (1 - momentum) * mean[j]
        running_var[j] = momentum * running_var[j] + (1 - momentum) * var
        scale[j] = gamma[j] * invstd[j]
    for i in prange(n):
        for j in range(d):
            out[i, j] = (x[i, j] - mean[j]) * scale[j] + beta[j]


@jit
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    n, d = x.shape
    scale = np.empty(d, x.dtype)
    for j in range(d):
        scale[j] = gamma[j] / math.sqrt(running_var[j] + eps)
    for i in prange(n):
        for j in range(d):
            out[i, j] = (x[i, j] - running_mean[j]) * scale[j] + beta[j]


@jit
def batchnorm_backward(dy, x, gamma, mean, invstd, dgamma, dbeta, dx):
    n, d = x.shape
    f = x.dtype.type
    nc = _chunks(n)
    s = np.zeros((nc, d))  # per chunk: Σdy, Σdy·x̂ of each column
    q = np.zeros((nc, d))
    scale = np.empty(d, x.dtype)
    for c in prange(nc):
        for i in range(c * n // nc, (c + 1) * n // nc):
            for j in range(d):
                xhat = (x[i, j] - mean[j]) * invstd[j]
                s[c, j] += dy[i, j]
                q[c, j] += dy[i, j] * xhat
    for j in prange(d):
        sj, qj = 0.0, 0.0
        for c in range(nc):
            sj += s[c, j]
            qj += q[c, j]
        dbeta[j] = sj
        dgamma[j] = qj
        scale[j] = gamma[j] * invstd[j] / f(n)
    for i in prange(n):
        for j in range(d):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            dx[i, j] = scale[j] * (f(n) * dy[i, j] - dbeta[j] - xhat * dgamma[j])


KERNELS = {f.__name__: f for f in (batchnorm_forward_train, batchnorm_forward_eval,
                                   batchnorm_backward)}
SERIAL = serial_twins(KERNELS)
