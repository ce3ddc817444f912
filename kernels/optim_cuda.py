"""Fused optimizer updates on a CUDA GPU: one launch over a contiguous 1-D buffer.

The CUDA twins of ``optim_cpu``: the same arguments (p, g, *state, clip, *scalars, record),
names and arithmetic, line for line; the CPU's ``prange`` loop is a grid-stride loop here, so
any grid covers any size. clip[0] (gradient-norm clipping's factor) is read from device
memory, where ``clip_cuda`` wrote it. Arrays come in as CuPy arrays (through
``__cuda_array_interface__``) or Numba device arrays; ``accel.dispatch`` picks the grid and the
stream. As on the CPU, the scalars are cast once to the buffers' dtype (``f = p.dtype.type``)
and the math is done in it.
"""

import math

from .cuda_jit import cuda, grid_stride, jit
from .guard_record import SKIP, SKIPPED


@jit
def sgd(p, g, clip, lr, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, wd, c, nd = f(lr), f(wd), f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        p[i] -= lr * gi


@jit
def momentum(p, g, v, clip, lr, mu, dampening, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, mu, keep, wd = f(lr), f(mu), f(1 - dampening), f(wd)
    c, nd = f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        v[i] = mu * v[i] + keep * gi
        p[i] -= lr * v[i]


@jit
def nesterov(p, g, v, clip, lr, mu, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, mu, mu2, lr1 = f(lr), f(mu), f(mu * mu), f((1 + mu) * lr)
    wd, c, nd = f(wd), f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        p[i] += mu2 * v[i]
        p[i] -= lr1 * gi
        v[i] = mu * v[i] - lr * gi


@jit
def adagrad(p, g, h, clip, lr, eps, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, eps, wd, c, nd = f(lr), f(eps), f(wd), f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        h[i] += gi * gi
        p[i] -= lr * gi / (math.sqrt(h[i]) + eps)


@jit
def rmsprop(p, g, h, clip, lr, decay_rate, eps, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    rho, keep, lr, eps, wd = f(decay_rate), f(1 - decay_rate), f(lr), f(eps), f(wd)
    c, nd = f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        h[i] = rho * h[i] + keep * gi * gi
        p[i] -= lr * gi / (math.sqrt(h[i]) + eps)


@jit
def adadelta(p, g, h, u, clip, lr, rho, eps, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, rho, keep, eps, wd = f(lr), f(rho), f(1 - rho), f(eps), f(wd)
    c, nd = f(clip[0]), int(decayed)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        if i < nd:
            gi += wd * p[i]
        h[i] = rho * h[i] + keep * gi * gi
        delta = math.sqrt(u[i] + eps) / math.sqrt(h[i] + eps) * gi
        u[i] = rho * u[i] + keep * delta * delta
        p[i] -= lr * delta


@jit
def adam(p, g, m, v, clip, beta1, beta2, eps, lr, t, folded, wd, shrink, decayed, record):
    if record[SKIP]:
        return
    n = t - record[SKIPPED]  # updates applied, this one included
    bc1, bc2 = 1 - beta1 ** n, 1 - beta2 ** n
    if folded:
        step_size, c2 = lr * math.sqrt(bc2) / bc1, 1.0
    else:
        step_size, c2 = lr / bc1, 1 / math.sqrt(bc2)
    f = p.dtype.type
    b1, keep1, b2, keep2 = f(beta1), f(1 - beta1), f(beta2), f(1 - beta2)
    eps, step_size, c2, wd, shrink = f(eps), f(step_size), f(c2), f(wd), f(shrink)
    c, nd, one = f(clip[0]), int(decayed), f(1)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = c * g[i]
        s = one
        if i < nd:
            gi += wd * p[i]
            s = shrink
        m[i] = b1 * m[i] + keep1 * gi
        v[i] = b2 * v[i] + keep2 * gi * gi
        p[i] = s * p[i] - step_size * m[i] / (c2 * math.sqrt(v[i]) + eps)


KERNELS = {f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adadelta, adam)}


def launch(name, p, *arrays):
    """(blocks, threads) of kernel ``name`` for these arguments: a grid-stride loop over p."""
    return grid_stride(p.size)
