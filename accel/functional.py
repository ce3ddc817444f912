"""The ``xp`` reference math that the fused kernels twin: optimizer rules and batch norm.

Each function is plain NumPy/CuPy code, the readable ground truth the kernels in
``accel.kernels`` are tested against. Optimizer rules take (p, g, *state, clip, *scalars)
and update p and the state arrays in place; scalars that depend only on the step (bias
corrections) are computed once on the host by ``accel.optim``; gradient-norm clipping's
factor is computed on the device (``clip_factor``) into ``clip``. Batch norm takes (N, D)
arrays and returns new ones (the running statistics are updated in place).

``accel.dispatch`` pairs each function here with its kernels; nothing here imports anything
of accel above ``backend``.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import array_module
from .kernels.guard_record import FIRST, FLAGS, GRADIENT, LOSS, SKIP, SKIPPED, STATISTICS, WHAT

# -- optimizer rules: (p, g, *state, clip, *scalars), in place
#
# clip (float64, shape (2,)): clip[0] is gradient-norm clipping's factor, written on the device
# by ``clip_factor`` (1: no clipping); every rule steps along c·g, c = clip[0] cast to p's
# dtype, without writing g. Weight decay (coupled wd, or AdamW's decoupled shrink) applies to
# the first ``decayed`` elements of p: all of p (decayed ≥ p.size), none (0), or the leading
# block of a 1-D flat buffer that holds a network's weight matrices (``accel.decay_mask``).


def _gradient(p, g, clip, wd, decayed):
    """c·g + wd·p over the decayed elements, c·g elsewhere (a new array)."""
    g = g * clip[:1].astype(g.dtype)
    if wd and decayed > 0:
        if decayed >= p.size:
            g += wd * p
        else:
            n = int(decayed)
            g[:n] += wd * p[:n]
    return g


def sgd(p, g, clip, lr, wd, decayed):
    """p ← p − lr·(c·g + wd·p)."""
    g = _gradient(p, g, clip, wd, decayed)
    p -= lr * g


def momentum(p, g, v, clip, lr, mu, dampening, wd, decayed):
    """v ← μ·v + (1 − dampening)·g; p ← p − lr·v.

    dampening=0 is the book's v ← μv − lr·g (the same steps while lr is constant);
    dampening=μ is the course's EMA form v ← βv + (1 − β)g.
    """
    g = _gradient(p, g, clip, wd, decayed)
    v *= mu
    v += (1 - dampening) * g
    p -= lr * v


def nesterov(p, g, v, clip, lr, mu, wd, decayed):
    """Nesterov momentum: p ← p + μ²·v − (1 + μ)·lr·g with the previous v; then
    v ← μ·v − lr·g.

    The book's code since its 2021 fix, Sutskever's form, and torch.optim.SGD(nesterov=True)
    (whose buffer is b = −v/lr: the same steps while lr is constant).
    """
    g = _gradient(p, g, clip, wd, decayed)
    p += mu * mu * v
    p -= (1 + mu) * lr * g
    v *= mu
    v -= lr * g


def adagrad(p, g, h, clip, lr, eps, wd, decayed):
    """h ← h + g²; p ← p − lr·g / (√h + ε)."""
    xp = array_module(p)
    g = _gradient(p, g, clip, wd, decayed)
    h += g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def rmsprop(p, g, h, clip, lr, decay_rate, eps, wd, decayed):
    """h ← ρ·h + (1 − ρ)·g²; p ← p − lr·g / (√h + ε)."""
    xp = array_module(p)
    g = _gradient(p, g, clip, wd, decayed)
    h *= decay_rate
    h += (1 - decay_rate) * g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def adadelta(p, g, h, u, clip, lr, rho, eps, wd, decayed):
    """AdaDelta (Zeiler 2012; torch.optim.Adadelta): h ← ρ·h + (1 − ρ)·g²;
    Δ = √(u + ε)/√(h + ε)·g; u ← ρ·u + (1 − ρ)·Δ²; p ← p − lr·Δ.

    DeZero's AdaDelta is lr = 1 (its Δ = √((u + ε)/(h + ε))·g: the same up to rounding).
    """
    xp = array_module(p)
    g = _gradient(p, g, clip, wd, decayed)
    h *= rho
    h += (1 - rho) * g * g
    delta = xp.sqrt(u + eps) / xp.sqrt(h + eps) * g
    u *= rho
    u += (1 - rho) * delta * delta
    p -= lr * delta


def adam(p, g, m, v, clip, beta1, beta2, eps, lr, t, folded, wd, shrink, decayed):
    """m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²; p ← shrink·p − lr·m̂/(√v̂ + ε) with
    m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ) (torch.optim.Adam), t the number of this update.

    Computed as p ← shrink·p − step_size·m/(c2·√v + ε), step_size = lr/(1 − β1ᵗ),
    c2 = 1/√(1 − β2ᵗ). folded: the book's form, step_size = lr·√(1 − β2ᵗ)/(1 − β1ᵗ), c2 = 1
    (ε then sits on √v, not on √v̂). shrink = 1 − lr·wd_decoupled (AdamW) on the decayed
    elements, else 1.
    """
    xp = array_module(p)
    sqrt = math.sqrt if isinstance(t, (int, float)) else xp.sqrt  # t on the device: its sqrt
    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
    if folded:
        step_size, c2 = lr * sqrt(bc2) / bc1, 1.0
    else:
        step_size, c2 = lr / bc1, 1 / sqrt(bc2)
    g = _gradient(p, g, clip, wd, decayed)
    if shrink != 1 and decayed > 0:
        if decayed >= p.size:
            p *= shrink
        else:
            p[:int(decayed)] *= shrink
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    p -= step_size * m / (c2 * xp.sqrt(v) + eps)


# -- gradient-norm clipping: its factor, decided on the device

def clip_array(like):
    """A clip array on ``like``'s device, of its array type: [1, 0] (factor 1: no clipping)."""
    clip = array_module(like).zeros_like(like, dtype=np.float64, shape=(2,))
    clip[0] = 1.0
    return clip


CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s (and DeZero's ClipGrad's)


def clip_factor(g, clip, max_norm, eps, last):
    """clip[1] ← clip[1] + Σg² (in float64), and when ``last``: clip[0] ← min(1,
    max_norm/(√clip[1] + eps)), the factor of torch.nn.utils.clip_grad_norm_ (eps =
    CLIP_EPS), and clip[1] ← 0. A network's flat gradient buffer is one call (last = 1); a
    dict of arrays one call per array, the last with last = 1: the global L2 norm over all of
    them. Nothing is read back: the optimizer rules read clip[0] on the device. NaN/Inf in g
    give a NaN factor (as torch's), which the non-finite guard's skip makes harmless."""
    xp = array_module(g)
    flat = g.reshape(-1).astype(xp.float64)
    clip[1:] += flat @ flat
    if last:
        clip[:1] = xp.minimum(1.0, max_norm / (xp.sqrt(clip[1:]) + eps))
        clip[1:] = 0.0


# -- batch normalization over (N, D)


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    """Normalize (N, D) by batch statistics; update running stats in place.

    mean = Σx/N, var = Σ(x−mean)²/N (biased), invstd = 1/√(var+ε), out = γ·(x−mean)·invstd + β;
    running ← momentum·running + (1−momentum)·batch. Returns (out, mean, invstd).
    """
    xp = array_module(x)
    mean = x.mean(axis=0)
    xc = x - mean
    var = (xc * xc).mean(axis=0)
    invstd = 1 / xp.sqrt(var + eps)
    running_mean *= momentum
    running_mean += (1 - momentum) * mean
    running_var *= momentum
    running_var += (1 - momentum) * var
    return xc * (gamma * invstd) + beta, mean, invstd


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """out = γ·(x − running_mean)/√(running_var + ε) + β."""
    xp = array_module(x)
    scale = gamma / xp.sqrt(running_var + eps)
    return (x - running_mean) * scale + beta


def batchnorm_backward(dy, x, gamma, mean, invstd, dgamma, dbeta):
    """Gradients of batch norm: returns dx; dgamma and dbeta are written in place (a
    network's are views into its flat gradient buffer).

    x̂ = (x − mean)·invstd; dβ = Σdy; dγ = Σdy·x̂; dx = γ·invstd/N·(N·dy − Σdy − x̂·Σ(dy·x̂)).
    """
    n = x.shape[0]
    xhat = (x - mean) * invstd
    dy.sum(axis=0, out=dbeta)
    (dy * xhat).sum(axis=0, out=dgamma)
    return (gamma * invstd / n) * (n * dy - dbeta - xhat * dgamma)


# -- layers: bias + activation, its backward, softmax + cross-entropy + gradient, and the
#    binary cross-entropy of one sigmoid unit
#
# The activation is a number (the kernels take scalars): RELU, SIGMOID or TANH.

RELU, SIGMOID, TANH = 0, 1, 2
ACTIVATION_CODES = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}


def bias_activation(y, b, act):
    """y ← f(y + b) in place, for y of shape (N, D) and b of shape (D,):
    relu f(z) = max(z, 0); sigmoid f(z) = (1 + tanh(z/2))/2 (never overflows); tanh."""
    xp = array_module(y)
    y += b
    if act == RELU:
        xp.maximum(y, 0, out=y)
    elif act == SIGMOID:
        y *= 0.5
        xp.tanh(y, out=y)
        y += 1
        y *= 0.5
    else:
        xp.tanh(y, out=y)


def activation_backward_bias(dout, out, db, act):
    """dy = dout·f'(z), written from the output out = f(z): relu (out > 0), sigmoid
    out·(1 − out), tanh 1 − out²; db ← Σ_rows dy (in place). Returns dy."""
    if act == RELU:
        dy = dout * (out > 0)
    elif act == SIGMOID:
        dy = dout * out * (1 - out)
    else:
        dy = dout * (1 - out * out)
    dy.sum(axis=0, out=db)
    return dy


def softmax_cross_entropy(x, t):
    """Per row i of the scores x (N, C), with class ids t (N,) or one-hot rows t (N, C):
    losses[i] = (log Σ_j exp(x_ij) − x_i,t_i) / N (the row max subtracted first), and
    dx = (softmax(x) − onehot(t)) / N, the gradient of the mean loss Σ losses.
    Returns (losses, dx)."""
    xp = array_module(x)
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = xp.exp(z)
    s = e.sum(axis=1)
    if t.ndim == 1:
        picked = z[xp.arange(n), t]
    else:
        picked = (z * t).sum(axis=1)
    losses = (xp.log(s) - picked) / n
    e /= s[:, None]
    if t.ndim == 1:
        e[xp.arange(n), t] -= 1
    else:
        e -= t
    e /= n
    return losses, e


def sigmoid_binary_cross_entropy(z, t):
    """The course's week-1 output: one logit z_i per sample (z of shape (N,)), labels t_i in
    {0, 1} (floats of z's dtype). Per sample, the binary cross-entropy of a = σ(z),
    −[t·log a + (1 − t)·log(1 − a)], computed from the logit, where it never overflows nor
    takes log 0: losses[i] = (max(z, 0) − z·t + log(1 + exp(−|z|))) / N; and
    dz = (σ(z) − t) / N, the gradient of the mean loss Σ losses. With e = exp(−|z|) (never
    overflows), σ(z) = 1/(1 + e) for z ≥ 0 and e/(1 + e) below, exact to the last bits at
    both ends. Returns (losses, dz)."""
    xp = array_module(z)
    n = z.shape[0]
    e = xp.exp(-xp.abs(z))
    losses = (xp.maximum(z, 0) - z * t + xp.log1p(e)) / n
    dz = (xp.where(z >= 0, 1, e) / (1 + e) - t) / n
    return losses, dz



def scaled_add(y, x, a):
    """y ← y + a·x in place (a network's L2 gradient: g ← g + λ·W over its weight block)."""
    y += a * x


# -- the non-finite guard of a training step (the record's layout: accel.kernels.guard_record)


def nonfinite_guard(loss, g, g_starts, buffers, buffer_starts, saved, record, iteration,
                    sticky):
    """Decide on the device whether a training step is finite, and keep its record.

    The step is bad when loss + Σg + Σbuffers is not finite (NaN and ±Inf survive a sum,
    taken in float64), or, with ``sticky``, when an earlier step was. A bad step sets
    record[SKIP] (the optimizer's update then changes nothing), adds its iteration to the
    record and puts the running statistics ``buffers`` back from ``saved``; a good one copies
    them into ``saved``. At the first bad step the record keeps what was not finite: the loss,
    which blocks ``g[g_starts[b]:g_starts[b + 1]]``, which running-statistics blocks.
    Nothing is read back to the host.
    """
    xp = array_module(g)
    f64 = xp.float64
    with np.errstate(all="ignore"):  # NaN/Inf is what is looked for here (NumPy would warn)
        total = loss.astype(f64).sum() + g.sum(dtype=f64) + buffers.sum(dtype=f64)
    bad_now = ~xp.isfinite(total)
    first_time = bad_now & (record[FIRST] == 0)
    n_g, n_b = g_starts.size - 1, buffer_starts.size - 1
    blocks = xp.concatenate([_nonfinite_blocks(g, g_starts), _nonfinite_blocks(buffers,
                                                                                buffer_starts)])
    what = ((~xp.isfinite(loss.astype(f64).sum())) * LOSS + blocks[:n_g].any() * GRADIENT
            + blocks[n_g:].any() * STATISTICS)
    record[FLAGS:FLAGS + n_g + n_b] = xp.where(first_time, blocks, record[FLAGS:FLAGS + n_g + n_b])
    record[WHAT] = xp.where(first_time, what, record[WHAT])
    record[FIRST] = xp.where(first_time, int(iteration), record[FIRST])
    bad = bad_now | ((record[FIRST] != 0) & bool(sticky))
    listed = xp.arange(FLAGS + n_g + n_b, record.size) == FLAGS + n_g + n_b + record[SKIPPED]
    record[FLAGS + n_g + n_b:] = xp.where(listed & bad, int(iteration),
                                          record[FLAGS + n_g + n_b:])
    record[SKIPPED] += bad
    record[SKIP] = bad
    xp.copyto(buffers, saved, where=bad)
    saved[...] = buffers


def _nonfinite_blocks(a, starts):
    """1 for each block a[starts[b]:starts[b + 1]] holding NaN/Inf, else 0 (int64)."""
    xp = array_module(a)
    count = xp.zeros(a.size + 1, dtype=xp.int64)
    xp.cumsum(~xp.isfinite(a), out=count[1:])
    return (count[starts[1:]] - count[starts[:-1]] > 0).astype(xp.int64)
