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
