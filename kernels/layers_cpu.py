"""Layer ops on the CPU: bias + activation, its backward with the bias gradient, and
softmax + cross-entropy + its gradient, each one pass instead of several array operations.

Each kernel takes the arguments of its ``xp`` reference in ``accel.functional`` followed by
its output arrays (allocated by ``accel.dispatch``), and computes what its CUDA twin in
``layers_cuda`` does. ``act`` is the activation's code (0 relu, 1 sigmoid, 2 tanh), passed
as a float like every scalar. Elementwise math is in the arrays' dtype, in the reference's
order; row and column sums are accumulated in float64.
"""

import math

import numpy as np
from numba import prange

from .cpu_jit import jit, serial_twins

COLS = 64  # the columns of db summed together down the rows


@jit
def bias_activation(y, b, act):
    n, d = y.shape
    f = y.dtype.type
    zero, one, half = f(0), f(1), f(0.5)
    for i in prange(n):
        for j in range(d):
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
    for i in prange(n):
        for j in range(d):
            o = out[i, j]
            if act == 0:
                dy[i, j] = dout[i, j] * (one if o > zero else zero)
            elif act == 1:
                dy[i, j] = dout[i, j] * o * (one - o)
            else:
                dy[i, j] = dout[i, j] * (one - o * o)
    # db: each column's rows added in row order, as before, but a block of COLS columns at a
    # time down the rows, so the loads run along a row (and vectorize)
    for b in prange(-(-d // COLS)):
        j0 = b * COLS
        j1 = min(j0 + COLS, d)
        s = np.zeros(j1 - j0)
        for i in range(n):
            row = dy[i, j0:j1]
            for j in range(j1 - j0):
                s[j] += row[j]
        for j in range(j1 - j0):
            db[j0 + j] = s[j]


@jit
def softmax_cross_entropy(x, t, losses, dx):
    n, c = x.shape
    f = x.dtype.type
    for i in prange(n):
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
    for i in prange(y.size):
        y[i] += a * x[i]


KERNELS = {f.__name__: f for f in (bias_activation, activation_backward_bias,
                                   softmax_cross_entropy, scaled_add)}
SERIAL = serial_twins(KERNELS)
