"""Layers with the book's interface: ``forward(x, train=...)`` and ``backward(dout)``.

Layers compute through the ``xp`` of their inputs, so they run on NumPy or CuPy alike.
``backward`` never writes into the caller's arrays. Layers with parameters keep references
to them (``W``, ``b``, ``gamma``, ``beta``) and write their gradients into ``dW``, ``db``,
``dgamma``, ``dbeta``: arrays of the same shapes which may be views into a network's flat
gradient buffer. What a layer returns is a new array, as in the book; ``reuse_outputs``
(what a network does, which consumes each before the next call) lets the fused ops refill
buffers of their own instead (``accel.dispatch.Site``): no allocation per step.
"""

from __future__ import annotations

import numpy as np

from . import checks, dispatch
from . import functional as F
from .backend import array_module


def _float_input(name, x, ndim=None):
    """A float array (the layers compute in its dtype; integers would be cast silently)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got "
                        f"{dtype if dtype is not None else type(x).__name__} (convert it first)")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def _param(name, a):
    """A layer's parameter: a float array (NumPy or CuPy), refused by name otherwise."""
    if not (hasattr(a, "dtype") and hasattr(a, "shape") and hasattr(a, "ndim")) or \
            isinstance(a, np.generic):
        raise TypeError(f"{name} must be a float array, got {a!r:.100}")
    _float_input(name, a)
    return a


def _grad_like(p, given, name):
    """``given`` checked against ``p`` (shape and dtype), or a fresh zero array like ``p``."""
    if given is None:
        return array_module(p).zeros_like(p)
    if given.shape != p.shape or given.dtype != p.dtype:
        raise ValueError(
            f"{name} must have shape {p.shape} and dtype {p.dtype}, "
            f"got {given.shape} {given.dtype}"
        )
    return given


def reuse_outputs(layers) -> None:
    """Let the fused ops of ``layers`` refill their own output buffers at every call instead
    of returning new arrays: for a caller that consumes each output before the next call of
    the same layer (``MultiLayerNet``)."""
    for layer in layers:
        if isinstance(layer, Affine):
            layer.reuse = True
        for site in vars(layer).values():
            if isinstance(site, dispatch.Site):
                site.reuse = True


def _product(a, b, out=None):
    """a·b of matrices, into ``out`` when given. ``ndarray.dot`` (the same BLAS call as
    ``matmul``, the same bits, at half its call cost for a book-size layer) when the dtypes
    agree, as its ``out`` requires; else ``matmul`` (which promotes and casts)."""
    if a.dtype is b.dtype and (out is None or out.dtype is a.dtype):
        return a.dot(b) if out is None else a.dot(b, out=out)
    return array_module(a).matmul(a, b, out=out)


class Affine:
    """out = x·W + b, with x of any rank flattened to (N, -1)."""

    def __init__(self, W, b, dW=None, db=None):
        _param("W", W), _param("b", b)
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"W must be (n_in, n_out) and b (n_out,), got {W.shape} and {b.shape}")
        if W.dtype != b.dtype:
            raise TypeError(f"W and b dtypes differ: {W.dtype} and {b.dtype}")
        self.W, self.b, self.WT = W, b, W.T
        self.dW, self.db = _grad_like(W, dW, "dW"), _grad_like(b, db, "db")
        self.x = self.x_shape = None
        self.need_dx = True  # False for a first layer: skips the unused dL/dx product
        self.xp = array_module(W)
        self.reuse = False  # see reuse_outputs: x·W and dL/dx into buffers of the layer's own
        self._y = self._dx = None

    def forward(self, x, train: bool = False):
        out = self.forward_linear(x)
        out += self.b  # in place: one allocation per forward, not two
        return out

    def backward(self, dout):
        dout.sum(axis=0, out=self.db)
        return self.backward_linear(dout)

    def forward_linear(self, x):
        """x·W without the bias (for a following layer that adds it in its own pass)."""
        if not hasattr(x, "dtype"):
            _float_input("x", x)  # not an array: says so
        self.x_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.W.shape[0] or x.dtype.kind != "f":
            _float_input("x", x)
            raise ValueError(
                f"x has {x.shape[1]} features per sample (shape {self.x_shape}), "
                f"Affine expects {self.W.shape[0]}"
            )
        self.x = x
        if not self.reuse:
            return _product(x, self.W)
        y = self._y
        if y is None or y.shape[0] != x.shape[0] or y.dtype != x.dtype:
            y = self._y = self.xp.empty_like(self.W, shape=(x.shape[0], self.W.shape[1]),
                                             dtype=x.dtype)  # W's array type
        return _product(x, self.W, y)

    def backward_linear(self, dout):
        """dW = xᵀ·dout and dL/dx = dout·Wᵀ (db is left to the caller)."""
        xp = self.xp
        _product(self.x.T, dout, self.dW)
        if not self.need_dx:
            return None
        if not self.reuse:
            return _product(dout, self.WT).reshape(self.x_shape)
        dx = self._dx
        if dx is None or dx.shape != self.x.shape or dx.dtype != dout.dtype:
            dx = self._dx = xp.empty_like(self.W, shape=self.x.shape, dtype=dout.dtype)
        _product(dout, self.WT, dx)
        return dx if len(self.x_shape) == 2 else dx.reshape(self.x_shape)


class _Activation:
    """What the three activations share: the fused pass after an Affine layer (bias and
    activation in one kernel, backward and the bias gradient in another; formulas in
    ``accel.functional``)."""

    code = None  # functional.RELU / SIGMOID / TANH

    def __init__(self):
        self.out = None
        self._forward = dispatch.Site(F.bias_activation)
        self._backward = dispatch.Site(F.activation_backward_bias)

    def forward_bias(self, y, b):
        """f(y + b), computed in place in y."""
        self._forward(y, b, scalars=(self.code,))
        self.out = y
        return y

    def backward_bias(self, dout, db):
        """dL/dy from dL/dout, with db ← Σ_rows dL/dy written in place."""
        return self._backward(dout, self.out, db, scalars=(self.code,))


class ReLU(_Activation):
    """out = max(x, 0)."""

    code = F.RELU

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x, train: bool = False):
        _float_input("x", x)
        self.mask = x > 0
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class Sigmoid(_Activation):
    """out = 1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2, which never overflows."""

    code = F.SIGMOID

    def forward(self, x, train: bool = False):
        _float_input("x", x)
        xp = array_module(x)
        self.out = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)


class Tanh(_Activation):
    """out = tanh(x)."""

    code = F.TANH

    def forward(self, x, train: bool = False):
        _float_input("x", x)
        self.out = array_module(x).tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out * self.out)


class Dropout:
    """Drop each unit with probability ``ratio`` while training.

    inverted=True (default, the course's and PyTorch's form): out = x·mask / (1 − ratio) at
    train time, out = x at test time. inverted=False (the book's form): out = x·mask at train
    time, out = x·(1 − ratio) at test time. Same expected output either way.
    """

    def __init__(self, ratio: float = 0.5, inverted: bool = True, rng=None):
        self.ratio = checks.in_unit_interval("ratio", ratio)
        self.inverted = checks.boolean("inverted", inverted)
        self.rng = rng
        self.mask = None

    def forward(self, x, train: bool = False):
        _float_input("x", x)
        keep = 1.0 - self.ratio
        if not train:
            self.mask = None
            return x if self.inverted else x * keep
        if self.rng is None:
            self.rng = array_module(x).random.default_rng()
        self.mask = self.rng.random(x.shape, dtype=x.dtype) >= self.ratio
        if self.inverted:
            return x * (self.mask / x.dtype.type(keep))
        return x * self.mask

    def backward(self, dout):
        if self.mask is None:  # evaluated without train=True: a fixed scale
            return dout if self.inverted else dout * (1.0 - self.ratio)
        if self.inverted:
            return dout * (self.mask / dout.dtype.type(1.0 - self.ratio))
        return dout * self.mask


class BatchNorm:
    """Batch normalization over the features of (N, D) input (higher ranks flattened).

    Training normalizes by the batch mean and biased variance and updates the running averages
    (running ← momentum·running + (1 − momentum)·batch; the book's momentum 0.9 is PyTorch's
    0.1); evaluation uses the running averages. The math is ``accel.functional``'s
    batchnorm_* (formulas there), run as the fused kernel or that reference, as
    ``accel.dispatch`` decides.
    """

    def __init__(self, gamma, beta, momentum: float = 0.9, eps: float = 1e-5,
                 running_mean=None, running_var=None, dgamma=None, dbeta=None):
        _param("gamma", gamma), _param("beta", beta)
        if gamma.ndim != 1 or beta.shape != gamma.shape:
            raise ValueError(f"gamma and beta must be (D,), got {gamma.shape} and {beta.shape}")
        self.momentum = checks.in_unit_interval("momentum", momentum)
        self.eps = checks.positive("eps", eps)
        xp = array_module(gamma)
        self.gamma, self.beta = gamma, beta
        self.dgamma = _grad_like(gamma, dgamma, "dgamma")
        self.dbeta = _grad_like(beta, dbeta, "dbeta")
        self.running_mean = xp.zeros_like(gamma) if running_mean is None else running_mean
        self.running_var = xp.ones_like(gamma) if running_var is None else running_var
        self.x = self.x_shape = self.mean = self.invstd = None
        self._train = dispatch.Site(F.batchnorm_forward_train)
        self._eval = dispatch.Site(F.batchnorm_forward_eval)
        self._backward = dispatch.Site(F.batchnorm_backward)

    def forward(self, x, train: bool = False):
        _float_input("x", x)
        self.x_shape = x.shape
        if x.ndim != 2:  # a new view every call: only when needed
            x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.gamma.shape[0]:
            raise ValueError(
                f"x has {x.shape[1]} features (shape {self.x_shape}), "
                f"BatchNorm expects {self.gamma.shape[0]}"
            )
        if not train:
            out = self._eval(x, self.gamma, self.beta, self.running_mean, self.running_var,
                             scalars=(self.eps,))
            return _shaped(out, self.x_shape)
        if x.shape[0] < 2:
            raise ValueError(
                f"BatchNorm in train mode needs a batch of at least 2 samples, got x of shape "
                f"{self.x_shape} (the variance of one sample is 0)"
            )
        self.x = x
        out, self.mean, self.invstd = self._train(
            x, self.gamma, self.beta, self.running_mean, self.running_var,
            scalars=(self.momentum, self.eps))
        return _shaped(out, self.x_shape)

    def backward(self, dout):
        dy = dout if dout.ndim == 2 else dout.reshape(dout.shape[0], -1)
        dx = self._backward(dy, self.x, self.gamma, self.mean, self.invstd, self.dgamma,
                            self.dbeta)  # dgamma, dbeta in place: the grad buffer
        return _shaped(dx, self.x_shape)


def _shaped(a, shape):
    """``a`` with ``shape`` (itself when it has it already: no new view object)."""
    return a if a.shape == shape else a.reshape(shape)


class SoftmaxWithLoss:
    """Softmax + mean cross-entropy. ``t`` holds class ids (N,) or one-hot rows (N, C).

    loss = mean(logsumexp(x) − x[t]), with the row max subtracted first so exp never
    overflows; its gradient (softmax(x) − onehot(t)) / N is formed in the same pass
    (``functional.softmax_cross_entropy``), and backward scales it by dout.
    """

    def __init__(self):
        self.dx = self.t = None
        self._site = dispatch.Site(F.softmax_cross_entropy)

    def forward(self, x, t, train: bool = False, check: bool = True):
        """The loss (a 0-d array). ``check=False`` skips the label checks (class ids in
        range, one-hot rows of 0/1), which read the labels back from the device: for labels
        checked once before a training loop (``MultiLayerNet.prepare``)."""
        _float_input("x", x, ndim=2)
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"x is empty (shape {tuple(x.shape)})")
        if check:
            t = checks.labels("t", t, n, x.shape[1])
        elif getattr(t, "shape", (None,))[0] != n:
            raise ValueError(f"t must have {n} labels (one per row of x), got shape "
                             f"{getattr(t, 'shape', None)}")
        losses, self.dx = self._site(x, t)
        self.t = t
        return losses.sum()

    @property
    def y(self):
        """softmax(x) of the last forward pass, recovered from its gradient (N·dx + onehot:
        probabilities far below the dtype's resolution next to 1 read as 0)."""
        xp = array_module(self.dx)
        n = self.dx.shape[0]
        y = self.dx * n
        if self.t.ndim == 1:
            y[xp.arange(n), self.t] += 1
        else:
            y += self.t
        return y

    def backward(self, dout=1.0):
        if dout == 1:
            return self.dx
        return self.dx * self.dx.dtype.type(dout)


class SigmoidWithLoss:
    """One sigmoid unit + mean binary cross-entropy (the course's week-1 output). ``x`` holds
    one logit per sample, shape (N, 1); ``t`` labels 0/1 of shape (N,) or (N, 1).

    loss = mean(max(z, 0) − z·t + log(1 + exp(−|z|))), the course's
    −(1/m)Σ[y·log a + (1 − y)·log(1 − a)] of a = σ(z) computed from the logit (no overflow,
    no log 0); its gradient (σ(z) − t)/N is formed in the same call
    (``functional.sigmoid_binary_cross_entropy``), and backward scales it by dout.
    """

    def __init__(self):
        self.dx = self.z = None

    def forward(self, x, t, train: bool = False, check: bool = True):
        """The loss (a 0-d array). ``check=False`` skips the label checks (labels checked once
        by ``MultiLayerNet.prepare``: floats of x's dtype, shape (N,))."""
        _float_input("x", x, ndim=2)
        n = x.shape[0]
        if x.shape[1] != 1:
            raise ValueError(f"x must hold one logit per sample, shape ({n}, 1), got shape "
                             f"{tuple(x.shape)}")
        if check:
            t = checks.binary_labels("t", t, n, dtype=x.dtype)
        elif getattr(t, "shape", None) != (n,):
            raise ValueError(f"t must have {n} labels (one per row of x), got shape "
                             f"{getattr(t, 'shape', None)}")
        self.z = x[:, 0]
        losses, dz = F.sigmoid_binary_cross_entropy(self.z, t)
        self.dx = dz.reshape(n, 1)
        return losses.sum()

    @property
    def y(self):
        """σ(z) of the last forward pass, the probability of class 1, shape (N, 1)."""
        xp = array_module(self.z)
        return (0.5 * (1 + xp.tanh(0.5 * self.z))).reshape(-1, 1)

    def backward(self, dout=1.0):
        if dout == 1:
            return self.dx
        return self.dx * self.dx.dtype.type(dout)


class AffineActivation:
    """An Affine layer and the activation after it, in two passes instead of four: x·W, then
    f(· + b) in one kernel; backward: dL/dy and db in one kernel, then the two products.
    The two layers keep their parameters and state (``affine``, ``activation``)."""

    def __init__(self, affine: Affine, activation: _Activation):
        self.affine, self.activation = affine, activation

    def forward(self, x, train: bool = False):
        return self.activation.forward_bias(self.affine.forward_linear(x), self.affine.b)

    def backward(self, dout):
        return self.affine.backward_linear(self.activation.backward_bias(dout, self.affine.db))
