"""Batch norm over (N, D) on the CPU: training forward, eval forward, backward.

Each kernel takes the arguments of its ``xp`` reference in ``accel.layers`` followed by its
output arrays (allocated by ``accel.dispatch``), and computes what its CUDA twin in
``batchnorm_cuda`` does with the same arithmetic lines. Memory is walked the way each device
likes it: the twin gives each GPU thread one feature column j (neighbouring threads read
neighbouring addresses); here each parallel iteration streams a contiguous chunk of rows,
keeps per-chunk column sums, and the chunks' sums are added afterwards. So x is read twice in
the forward pass (statistics, output) and x, dy twice in the backward pass.

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
def batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
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
