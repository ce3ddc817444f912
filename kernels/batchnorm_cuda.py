"""Batch norm over (N, D) on a CUDA GPU: training forward, eval forward, backward.

The CUDA twins of ``batchnorm_cpu``: the same arguments (the reference's, then the output
arrays), names and arithmetic lines. One thread owns one feature column j (a grid-stride loop
over columns) and walks the rows; neighbouring threads read neighbouring columns, so every
row access is coalesced. Where the CPU kernel adds per-chunk sums, a thread here has the
whole column, so its sums are the column's. Statistics are accumulated in float64 around the
shift k = x[0, j]; elementwise math is in x's dtype, in the reference's order.
"""

import math

import numpy as np
from numba import cuda

from .cuda_jit import grid_stride, jit


@jit
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                            out, mean, invstd):
    n, d = x.shape
    for j in range(cuda.grid(1), d, cuda.gridsize(1)):
        sj, qj = 0.0, 0.0  # Σ(x − k), Σ(x − k)² of column j
        for i in range(n):
            xk = np.float64(x[i, j]) - x[0, j]
            sj += xk
            qj += xk * xk
        var = (qj - sj * sj / n) / n
        mean[j] = x[0, j] + sj / n
        invstd[j] = 1 / math.sqrt(var + eps)
        running_mean[j] = momentum * running_mean[j] + (1 - momentum) * mean[j]
        running_var[j] = momentum * running_var[j] + (1 - momentum) * var
        scale = gamma[j] * invstd[j]
        for i in range(n):
            out[i, j] = (x[i, j] - mean[j]) * scale + beta[j]


@jit
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    n, d = x.shape
    for k in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i, j = k // d, k % d
        scale = gamma[j] / math.sqrt(running_var[j] + eps)
        out[i, j] = (x[i, j] - running_mean[j]) * scale + beta[j]


@jit
def batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    n, d = x.shape
    f = x.dtype.type
    for j in range(cuda.grid(1), d, cuda.gridsize(1)):
        sj, qj = 0.0, 0.0  # Σdy, Σdy·x̂ of column j
        for i in range(n):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            sj += dy[i, j]
            qj += dy[i, j] * xhat
        dbeta[j] = sj
        dgamma[j] = qj
        scale = gamma[j] * invstd[j] / f(n)
        for i in range(n):
            xhat = (x[i, j] - mean[j]) * invstd[j]
            dx[i, j] = scale * (f(n) * dy[i, j] - dbeta[j] - xhat * dgamma[j])


KERNELS = {f.__name__: f for f in (batchnorm_forward_train, batchnorm_forward_eval,
                                   batchnorm_backward)}


def launch(name, x, *arrays):
    """(blocks, threads) of kernel ``name``: a thread per column for the statistics, a
    thread per element for the eval forward."""
    n, d = x.shape
    return grid_stride(n * d if name == "batchnorm_forward_eval" else d)
