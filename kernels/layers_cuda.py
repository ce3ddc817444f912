"""Layer ops on a CUDA GPU: the twins of ``layers_cpu`` (same arguments, names, formulas).

``bias_activation`` is a grid-stride loop over the elements and ``softmax_cross_entropy``
one over the rows (a thread owns a row of C scores: the book's C = 10). The backward's bias
gradient is a column sum: a block owns a tile of COLS columns, its ROWS threads per column
walk the rows ROWS apart (neighbouring threads read neighbouring columns: coalesced), and a
shared-memory tree adds the ROWS partial sums. Parallelism for the book's shapes
(N = 100..1024 rows, D = 100 units): ⌈D/COLS⌉ = 4 blocks of COLS·ROWS = 256 threads.
"""

import math

from .cuda_jit import cuda, float64, grid_stride, jit, tree_sum

COLS, ROWS = 32, 8  # the column-sum block: COLS columns × ROWS row lanes (ROWS a power of 2)


@jit
def bias_activation(y, b, act):
    n, d = y.shape
    f = y.dtype.type
    zero, one, half = f(0), f(1), f(0.5)
    for k in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i, j = k // d, k % d
        z = y[i, j] + b[j]
        if act == 0:
            y[i, j] = zero if z < zero else z  # NaN stays NaN, as max(z, 0) keeps it
        elif act == 1:
            y[i, j] = half * (one + math.tanh(half * z))
        else:
            y[i, j] = math.tanh(z)


@jit
def activation_backward_bias(dout, out, db, act, dy):
    n, d = dout.shape
    f = dout.dtype.type
    zero, one = f(0), f(1)
    partial = cuda.shared.array((ROWS, COLS), float64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * COLS + tx
    s = 0.0
    if j < d:
        for i in range(ty, n, ROWS):
            o = out[i, j]
            if act == 0:
                dy[i, j] = dout[i, j] * (one if o > zero else zero)
            elif act == 1:
                dy[i, j] = dout[i, j] * o * (one - o)
            else:
                dy[i, j] = dout[i, j] * (one - o * o)
            s += dy[i, j]
    partial[ty, tx] = s
    tree_sum(partial[:, tx], ty, ROWS)
    if ty == 0 and j < d:
        db[j] = partial[0, tx]


@jit
def softmax_cross_entropy(x, t, losses, dx):
    n, c = x.shape
    f = x.dtype.type
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = x[i, 0]
        for j in range(c):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(c):
            e = math.exp(x[i, j] - m)
            dx[i, j] = e
            s += e
        losses[i] = (math.log(s) - (x[i, t[i]] - m)) / n
        for j in range(c):
            p = f(dx[i, j] / s)
            if j == t[i]:
                p -= f(1)
            dx[i, j] = p / f(n)


@jit
def scaled_add(y, x, a):
    f = y.dtype.type
    a = f(a)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] += a * x[i]


KERNELS = {f.__name__: f for f in (bias_activation, activation_backward_bias,
                                   softmax_cross_entropy, scaled_add)}


def launch(name, x, *arrays):
    """(blocks, threads) of kernel ``name``: elements, column tiles, or rows."""
    if name == "scaled_add":
        return grid_stride(x.size)
    n, d = x.shape
    if name == "activation_backward_bias":
        return -(-d // COLS), (COLS, ROWS)  # N = 0 still writes db = 0
    return grid_stride(n * d if name == "bias_activation" else n)
