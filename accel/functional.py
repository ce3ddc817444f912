"""The ``xp`` reference math that the fused kernels twin: optimizer rules and batch norm.

Each function is plain NumPy/CuPy code, the readable ground truth the kernels in
``accel.kernels`` are tested against. Optimizer rules take (p, g, *state, *scalars) and
update p and the state arrays in place; scalars that depend only on the step (bias
corrections) are computed once on the host by ``accel.optim``. Batch norm takes (N, D)
arrays and returns new ones (the running statistics are updated in place).

``accel.dispatch`` pairs each function here with its kernels; nothing here imports anything
of accel above ``backend``.
"""

from __future__ import annotations

from .backend import array_module

# -- optimizer rules: (p, g, *state, *scalars), in place


def sgd(p, g, lr, wd):
    """p ← p − lr·(g + wd·p)."""
    if wd:
        g = g + wd * p
    p -= lr * g


def momentum(p, g, v, lr, mu, dampening, wd):
    """v ← μ·v + (1 − dampening)·g; p ← p − lr·v.

    dampening=0 is the book's v ← μv − lr·g (the same steps while lr is constant);
    dampening=μ is the course's EMA form v ← βv + (1 − β)g.
    """
    if wd:
        g = g + wd * p
    v *= mu
    v += (1 - dampening) * g
    p -= lr * v


def nesterov(p, g, v, lr, mu, wd):
    """Nesterov momentum: p ← p + μ²·v − (1 + μ)·lr·g with the previous v; then
    v ← μ·v − lr·g.

    The book's code since its 2021 fix, Sutskever's form, and torch.optim.SGD(nesterov=True)
    (whose buffer is b = −v/lr: the same steps while lr is constant).
    """
    if wd:
        g = g + wd * p
    p += mu * mu * v
    p -= (1 + mu) * lr * g
    v *= mu
    v -= lr * g


def adagrad(p, g, h, lr, eps, wd):
    """h ← h + g²; p ← p − lr·g / (√h + ε)."""
    xp = array_module(p)
    if wd:
        g = g + wd * p
    h += g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def rmsprop(p, g, h, lr, decay_rate, eps, wd):
    """h ← ρ·h + (1 − ρ)·g²; p ← p − lr·g / (√h + ε)."""
    xp = array_module(p)
    if wd:
        g = g + wd * p
    h *= decay_rate
    h += (1 - decay_rate) * g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def adam(p, g, m, v, beta1, beta2, eps, step_size, c2, wd, shrink):
    """m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²; p ← shrink·p − step_size·m / (c2·√v + ε).

    Standard form (torch.optim.Adam): step_size = lr/(1 − β1ᵗ), c2 = 1/√(1 − β2ᵗ), i.e.
    p ← p − lr·m̂ / (√v̂ + ε). The book's folded form: step_size = lr·√(1 − β2ᵗ)/(1 − β1ᵗ),
    c2 = 1. shrink = 1 − lr·wd_decoupled (AdamW), else 1.
    """
    xp = array_module(p)
    if wd:
        g = g + wd * p
    if shrink != 1:
        p *= shrink
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    p -= step_size * m / (c2 * xp.sqrt(v) + eps)


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


def batchnorm_backward(dy, x, gamma, mean, invstd):
    """Gradients of batch norm: returns (dx, dgamma, dbeta).

    x̂ = (x − mean)·invstd; dβ = Σdy; dγ = Σdy·x̂; dx = γ·invstd/N·(N·dy − Σdy − x̂·Σ(dy·x̂)).
    """
    n = x.shape[0]
    xhat = (x - mean) * invstd
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    dx = (gamma * invstd / n) * (n * dy - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta
