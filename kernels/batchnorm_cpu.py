"""Batch norm over (N, D) on the CPU: training forward, eval forward, backward.

Each kernel takes the arguments of its ``xp`` reference in ``accel.functional`` followed by its
output arrays (allocated by ``accel.dispatch``), and computes what its CUDA twin in
``batchnorm_cuda`` does with the same arithmetic lines; the loops differ, each walking memory
the way its device likes it. Here the column sums come first: each parallel iteration streams a
contiguous chunk of whole rows (at least ROWS_PER_CHUNK, at most MAX_CHUNKS chunks), ROW_BLOCK
rows at a time whose float64 terms are added in registers before the chunk's sums are loaded
and stored (a chunk's sums, 2 × D × 8 B, leave L1 at D = 4096). The chunks' sums are added in
chunk order, which depends on N only, so the result does not depend on the number of threads.
Then a parallel loop over rows writes the output. So x is read twice in the forward pass and
x, dy twice in the backward pass: a single read would have to keep a full-height panel of
columns in cache, and every such layout measured slower (docs/performance.md, "Batch norm
forward + backward").

How the twins differ: the CUDA kernels give a block a tile of 32 columns and split each
column's rows over 16 lanes (row i to lane i mod 16), whose float64 partial sums a shared-
memory tree adds, and the block then writes its columns' output; here the rows are split into
contiguous chunks. Both add the same float64 terms, in another order (last-bit differences
after rounding to float32).

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
ROW_BLOCK = 4  # rows summed in registers before a chunk's column sums are loaded and stored
# The row-block loop is written out in both kernels: as one helper taking the summed terms as
# a function it gave the same bits, but Numba cannot cache a kernel that passes a function
# ("dynamic globals": a compile in every process), and the forward ran slower
# (docs/performance.md, "Batch norm forward + backward").


@njit(cache=True)
def _chunks(n):
    """Number of row chunks for the column sums."""
    return max(1, min(n // ROWS_PER_CHUNK, MAX_CHUNKS))


@njit(cache=True)
def _add_chunks(part):
    """Σ over chunks c of part[:, c, :], in chunk order: (2, nc, d) → (2, d) float64."""
    tot = part[:, 0, :].copy()
    for c in range(1, part.shape[1]):
        for j in range(part.shape[2]):
            tot[0, j] += part[0, c, j]
            tot[1, j] += part[1, c, j]
    return tot


@jit
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                            out, mean, invstd):
    n, d = x.shape
    nc = _chunks(n)
    part = np.empty((2, nc, d))  # per chunk: Σ(x − k), Σ(x − k)² of each column
    k = x[0]
    for c in prange(nc):
        s, q = part[0, c], part[1, c]
        s[:] = 0.0
        q[:] = 0.0
        i, end = c * n // nc, (c + 1) * n // nc
        while i + ROW_BLOCK <= end:
            for j in range(d):
                sb, qb = 0.0, 0.0
                for r in range(i, i + ROW_BLOCK):  # a constant count: unrolled
                    xk = np.float64(x[r, j]) - k[j]
                    sb += xk
                    qb += xk * xk
                s[j] += sb
                q[j] += qb
            i += ROW_BLOCK
        for r in range(i, end):
            for j in range(d):
                xk = np.float64(x[r, j]) - k[j]
                s[j] += xk
                q[j] += xk * xk
    s, q = _add_chunks(part)
    scale = np.empty(d, x.dtype)
    for j in range(d):
        var = (q[j] - s[j] * s[j] / n) / n
        mean[j] = k[j] + s[j] / n
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
    part = np.empty((2, nc, d))  # per chunk: Σdy, Σdy·x̂ of each column
    for c in prange(nc):
        s, q = part[0, c], part[1, c]
        s[:] = 0.0
        q[:] = 0.0
        i, end = c * n // nc, (c + 1) * n // nc
        while i + ROW_BLOCK <= end:
            for j in range(d):
                sb, qb = 0.0, 0.0
                for r in range(i, i + ROW_BLOCK):  # a constant count: unrolled
                    xhat = (x[r, j] - mean[j]) * invstd[j]
                    sb += dy[r, j]
                    qb += dy[r, j] * xhat
                s[j] += sb
                q[j] += qb
            i += ROW_BLOCK
        for r in range(i, end):
            for j in range(d):
                xhat = (x[r, j] - mean[j]) * invstd[j]
                s[j] += dy[r, j]
                q[j] += dy[r, j] * xhat
    s, q = _add_chunks(part)
    scale = np.empty(d, x.dtype)
    for j in range(d):
        dbeta[j] = s[j]
        dgamma[j] = q[j]
        scale[j] = gamma[j] * invstd[j] / f(n)
    for i in prange(n):
        for j in range(d):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            dx[i, j] = scale[j] * (f(n) * dy[i, j] - dbeta[j] - xhat * dgamma[j])


KERNELS = {f.__name__: f for f in (batchnorm_forward_train, batchnorm_forward_eval,
                                   batchnorm_backward)}
SERIAL = serial_twins(KERNELS)
