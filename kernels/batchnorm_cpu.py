"""Batch norm over (N, D) on the CPU: training forward, eval forward, backward.

Each kernel takes the arguments of its ``xp`` reference in ``accel.layers`` followed by its
output arrays (allocated by ``accel.dispatch``), and computes what its CUDA twin in
``batchnorm_cuda`` does with the same arithmetic lines; the loops differ, each walking memory
the way its device likes it.

The training forward and the backward are column reductions followed by an elementwise pass
that needs the reductions. The columns are cut into tiles of whole columns (``tile_columns``:
N rows × w columns of the inputs within TILE_BYTES = 2 MB, w a multiple of 16, at least
MIN_TILES tiles where D allows) and one ``prange`` runs over the tiles. For its tile, a thread
walks the rows in order with a float64 accumulator per column (row views and tile-local
copies of the column vectors, so that the loops vectorize), finishes the column statistics,
then walks the rows again to write the output while the tile is still in cache (L2, or the
shared L3 for the larger tiles). So x (and dy) come from memory once per kernel, as in the
bandwidth roofline of ``benchmarks/bench_kernels.py``, and each kernel is one parallel region
(one wake-up of the thread pool, one barrier). The price: a row of a tile is only w columns,
so memory is read in runs of 4·w bytes, a row stride apart (1 024 × 4096 float32: 2 KB runs
of x in the forward, 1 KB of x and dy in the backward).

- ``batchnorm_forward_train``: Σ(x − k), Σ(x − k)² around the shift k = x[0, j] (a sample of
  the column, so Σ(x − k)² − (Σ(x − k))²/N does not cancel) → mean, invstd, running
  statistics; then out.
- ``batchnorm_backward``: Σdy, Σdy·x̂ → dbeta, dgamma; then dx by the two-reduction formula
  dx = γ·invstd/N·(N·dy − Σdy − x̂·Σ(dy·x̂)).
- ``batchnorm_forward_eval``: no reduction, a ``prange`` over the rows.

How the twins differ: the CUDA kernels give a block a tile of 32 columns and split each
column's rows over 16 lanes whose float64 partial sums a tree adds; here one thread adds a
column's rows in order, so the float64 sums are added in another order (last-bit differences
after rounding to float32). Formulas, shift, float64 accumulation and the elementwise
arithmetic (in x's dtype, the reference's order) are the same. Parallelism here is over
column tiles only: a tall, narrow input (D ≤ MIN_COLUMNS) runs on one thread.

Measured on this project's 2-core machine (1024 × 4096 float32, fwd + bwd):
``benchmarks/bn_rounds.py``, see the README's batch-norm row.
"""

import math

import numpy as np
from numba import njit, prange

from .cpu_jit import jit, serial_twins

TILE_BYTES = 2048 * 1024  # bytes of the inputs (x; x and dy) one tile may hold
MIN_COLUMNS = 16  # the narrowest tile: whole 64-byte lines of float32 rows
MIN_TILES = 8  # split D into at least this many tiles where it is wide enough (threads)


# The body of a tile is a plain function called from the prange loop: inside a parfor
# body the same loops ran 2-4x slower (the row loops did not vectorize there).
tile_jit = njit(cache=True, error_model="numpy")


@njit(cache=True)
def tile_columns(n, d, itemsize, inputs):
    """Columns per tile: ``inputs`` arrays of N × w elements within TILE_BYTES, at least
    MIN_COLUMNS (a multiple of 16), and at most D/MIN_TILES so that threads share D."""
    w = TILE_BYTES // max(1, n * itemsize * inputs)
    w = min(w, -(-d // MIN_TILES))
    w = max(MIN_COLUMNS, w // 16 * 16)
    return max(1, min(w, d))


@tile_jit
def forward_train_tile(x, gamma, beta, running_mean, running_var, momentum, eps,
                       out, mean, invstd, j0, m):
    """``batchnorm_forward_train`` of the m columns from j0 (serial: one tile, one thread)."""
    n = x.shape[0]
    k = x[0, j0:j0 + m].astype(np.float64)  # the shift of each column
    s = np.zeros(m)  # Σ(x − k), Σ(x − k)² of the tile's columns
    q = np.zeros(m)
    for i in range(n):
        xi = x[i, j0:j0 + m]
        for c in range(m):
            xk = np.float64(xi[c]) - k[c]
            s[c] += xk
            q[c] += xk * xk
    mu = np.empty(m, x.dtype)  # the tile's mean, scale, beta: local, so the output
    scale = np.empty(m, x.dtype)  # loop below vectorizes
    b = beta[j0:j0 + m].copy()
    for c in range(m):
        j = j0 + c
        sj, qj = s[c], q[c]
        var = (qj - sj * sj / n) / n
        mean[j] = x[0, j] + sj / n
        invstd[j] = 1 / math.sqrt(var + eps)
        running_mean[j] = momentum * running_mean[j] + (1 - momentum) * mean[j]
        running_var[j] = momentum * running_var[j] + (1 - momentum) * var
        mu[c] = mean[j]
        scale[c] = gamma[j] * invstd[j]
    for i in range(n):
        xi = x[i, j0:j0 + m]
        oi = out[i, j0:j0 + m]
        for c in range(m):
            oi[c] = (xi[c] - mu[c]) * scale[c] + b[c]


@jit
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                            out, mean, invstd):
    n, d = x.shape
    w = tile_columns(n, d, x.itemsize, 1)
    for t in prange(-(-d // w)):
        forward_train_tile(x, gamma, beta, running_mean, running_var, momentum, eps,
                           out, mean, invstd, t * w, min(w, d - t * w))


@jit
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    n, d = x.shape
    scale = np.empty(d, x.dtype)
    for j in range(d):
        scale[j] = gamma[j] / math.sqrt(running_var[j] + eps)
    for i in prange(n):
        for j in range(d):
            out[i, j] = (x[i, j] - running_mean[j]) * scale[j] + beta[j]


@tile_jit
def backward_tile(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, j0, m):
    """``batchnorm_backward`` of the m columns from j0 (serial: one tile, one thread)."""
    n = x.shape[0]
    f = x.dtype.type
    mu = mean[j0:j0 + m].copy()
    inv = invstd[j0:j0 + m].copy()
    s = np.zeros(m)  # Σdy, Σdy·x̂ of the tile's columns
    q = np.zeros(m)
    xhat = np.empty(m, x.dtype)  # of one row (two short loops vectorize, one long not)
    for i in range(n):
        xi = x[i, j0:j0 + m]
        dyi = dy[i, j0:j0 + m]
        for c in range(m):
            xhat[c] = (xi[c] - mu[c]) * inv[c]
        for c in range(m):
            s[c] += dyi[c]
            q[c] += dyi[c] * xhat[c]
    db = np.empty(m, x.dtype)  # the tile's dbeta, dgamma, scale: local, so the dx loop
    dg = np.empty(m, x.dtype)  # below vectorizes
    scale = np.empty(m, x.dtype)
    for c in range(m):
        j = j0 + c
        dbeta[j] = s[c]
        dgamma[j] = q[c]
        db[c] = dbeta[j]
        dg[c] = dgamma[j]
        scale[c] = gamma[j] * invstd[j] / f(n)
    for i in range(n):
        xi = x[i, j0:j0 + m]
        dyi = dy[i, j0:j0 + m]
        dxi = dx[i, j0:j0 + m]
        for c in range(m):
            xhat[c] = (xi[c] - mu[c]) * inv[c]
        for c in range(m):
            dxi[c] = scale[c] * (f(n) * dyi[c] - db[c] - xhat[c] * dg[c])


@jit
def batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    n, d = x.shape
    w = tile_columns(n, d, x.itemsize, 2)
    for t in prange(-(-d // w)):
        backward_tile(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, t * w, min(w, d - t * w))


KERNELS = {f.__name__: f for f in (batchnorm_forward_train, batchnorm_forward_eval,
                                   batchnorm_backward)}
SERIAL = serial_twins(KERNELS)
