"""Fused optimizer updates on the CPU: one parallel loop over a contiguous 1-D buffer.

Each kernel takes the arguments of its ``xp`` reference in ``accel.functional``
(p, g, *state, clip, *scalars), then the non-finite guard's ``record`` (``guard_record``: a
step the guard skips changes nothing, decided here on the device), updates p and the state in
place, and reads line for line like its CUDA twin in ``optim_cuda``. Adam's bias
corrections are computed here from the step count t less the skipped steps, so a skipped
step does not count. The gradient a step uses is gi = c·g + wd·p: c = clip[0], gradient-norm
clipping's factor (1 without clipping; written on the device by ``clip_cpu``), and the
coupled L2 weight decay (AdamW's decoupled shrink likewise) only on the first ``decayed``
elements, the block of a network's weight matrices (``accel.decay_mask``; all of p for a
plain array that decays, none for one that does not). ``f = p.dtype.type``: the host's
scalars are cast once to the buffers' dtype and all arithmetic is done in it, in the
reference's order, so a float32 buffer gets float32 math (twice the SIMD lanes of float64)
and the same roundings as NumPy's reference.
"""

import math

from numba import prange

from .cpu_jit import jit, serial_twins
from .guard_record import SKIP, SKIPPED


@jit
def sgd(p, g, clip, lr, wd, decayed, record):
    if record[SKIP]:
        return
    f = p.dtype.type
    lr, wd, c, nd = f(lr), f(wd), f(clip[0]), int(decayed)
    for i in prange(p.size):
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
    for i in prange(p.size):
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
    for i in prange(p.size):
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
    for i in prange(p.size):
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
    for i in prange(p.size):
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
    for i in prange(p.size):
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
    for i in prange(p.size):
        gi = c * g[i]
        s = one
        if i < nd:
            gi += wd * p[i]
            s = shrink
        m[i] = b1 * m[i] + keep1 * gi
        v[i] = b2 * v[i] + keep2 * gi * gi
        p[i] = s * p[i] - step_size * m[i] / (c2 * math.sqrt(v[i]) + eps)


KERNELS = {f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adadelta, adam)}
SERIAL = serial_twins(KERNELS)
