"""Every layer gradient-checked in float64 on NumPy, and its forward and backward on a device
compared with NumPy's (float32 and float64); the layers' conventions, on every backend."""

import numpy as np
import pytest
from conftest import assert_close, bn_backward, numpy_device_allclose

from accel import opcount
from accel.backend import array_module, to_numpy
from accel.functional import batchnorm_backward, batchnorm_forward_train
from accel.gradcheck import numerical_gradient, relative_difference
from accel.layers import (
    Affine,
    AffineActivation,
    BatchNorm,
    Dropout,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)


def _check_layer(layer, x, params=(), train=True, tol=1e-7):
    """Backward of L = Σ forward(x)·R against the numerical gradient, for x and params."""
    xp = array_module(x)
    r = xp.asarray(np.random.default_rng(1).standard_normal(layer.forward(x, train).shape))
    loss = lambda: (layer.forward(x, train) * r).sum()  # noqa: E731
    layer.forward(x, train)
    dx = layer.backward(r.copy())
    assert relative_difference(dx, numerical_gradient(loss, x)) < tol
    for p, name in params:
        layer.forward(x, train)
        layer.backward(r)
        analytic = getattr(layer, name).copy()
        assert relative_difference(analytic, numerical_gradient(loss, p)) < tol, name


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_affine_gradients_any_rank(rng):
    W = rng.standard_normal((12, 5))
    b = rng.standard_normal(5)
    layer = Affine(W, b)
    x = rng.standard_normal((4, 3, 2, 2))  # flattened to (4, 12)
    out = layer.forward(x)
    assert out.shape == (4, 5)
    assert_close(out, x.reshape(4, 12) @ W + b, rtol=1e-12)
    _check_layer(layer, x, [(W, "dW"), (b, "db")])
    assert layer.backward(np.ones((4, 5))).shape == x.shape


@pytest.mark.parametrize("cls", [ReLU, Sigmoid, Tanh])
def test_activation_gradients(rng, cls):
    x = rng.standard_normal((6, 7))
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the finite-difference step
    _check_layer(cls(), x)


@pytest.mark.parametrize("cls", [ReLU, Sigmoid, Tanh])
def test_fused_affine_activation_gradients(rng, cls):
    """The network's pass: x·W, then f(· + b) in one kernel; backward in one kernel and the
    two products."""
    W, b = rng.standard_normal((7, 5)), rng.standard_normal(5)
    x = rng.standard_normal((6, 7))
    layer = AffineActivation(Affine(W, b), cls())
    _check_layer(layer, x)
    r = rng.standard_normal((6, 5))
    layer.forward(x, True)
    layer.backward(r)
    dW, db = layer.affine.dW.copy(), layer.affine.db.copy()
    loss = lambda: (layer.forward(x, True) * r).sum()  # noqa: E731
    assert relative_difference(dW, numerical_gradient(loss, W)) < 1e-7
    assert relative_difference(db, numerical_gradient(loss, b)) < 1e-7


LAYERS = ["affine", "affine+relu", "affine+sigmoid", "affine+tanh", "relu", "sigmoid", "tanh",
          "batchnorm", "softmax", "softmax-onehot"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", LAYERS)
@numpy_device_allclose(rtol={np.float32: 2e-5, np.float64: 1e-12},
                       atol={np.float32: 2e-5, np.float64: 1e-12})
def test_layer_forward_backward_agree_across_backends(backend, kind, dtype):
    """Each layer on the device against NumPy (the gradient checks above hold there): the
    forward output, dx and the parameter gradients; BatchNorm's running statistics and its
    eval-mode output; the loss."""
    rng = np.random.default_rng(3)

    def draw(*shape, scale=1.0):
        return backend.asarray(rng.standard_normal(shape) * scale, dtype=dtype)

    x = draw(16, 3, 4, scale=3)  # Affine flattens it to (16, 12)
    if kind.startswith("softmax"):
        ids = rng.integers(0, 12, 16)
        t = backend.asarray(np.eye(12)[ids] if kind == "softmax-onehot" else ids, dtype=(
            dtype if kind == "softmax-onehot" else None))
        layer = SoftmaxWithLoss()
        loss = layer.forward(x.reshape(16, 12), t)
        return loss, layer.backward()
    if kind == "batchnorm":
        layer = BatchNorm(draw(12) + 1, draw(12), momentum=0.9, eps=1e-5)
        out = layer.forward(x.reshape(16, 12), train=True)
        dx = layer.backward(draw(16, 12))
        return (out, dx, layer.dgamma, layer.dbeta, layer.running_mean, layer.running_var,
                layer.forward(x.reshape(16, 12)))
    activation = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}.get(kind.split("+")[-1])
    if "affine" not in kind:
        layer = activation()
        return layer.forward(x), layer.backward(draw(16, 3, 4))
    affine = Affine(draw(12, 5), draw(5))
    layer = affine if activation is None else AffineActivation(affine, activation())
    out = layer.forward(x, train=True)
    return out, layer.backward(draw(16, 5)), affine.dW, affine.db


def test_the_comparison_fails_when_the_backends_disagree():
    """numpy_device_allclose: agreeing results pass; a difference past the tolerance, another
    dtype, or a device run that computed on the host, fail."""

    def run(body, **tol):
        return numpy_device_allclose(**tol)(body)("opcount")

    def agree(backend):
        return {"a": backend.asarray(np.arange(3.0)) * 2}

    run(agree)

    def off_by(backend):
        delta = 1e-6 if isinstance(backend, opcount.CountingBackend) else 0.0
        return (backend.asarray(np.ones(2)), backend.asarray(np.ones(3)) + delta)

    run(off_by, rtol=1e-5)
    with pytest.raises(AssertionError, match=r"result\[1\]: opcount against numpy"):
        run(off_by, rtol=1e-7)

    def other_dtype(xp):
        dtype = np.float32 if isinstance(xp.ones(1), opcount.CountingArray) else np.float64
        return xp.ones(3, dtype=dtype)

    with pytest.raises(AssertionError, match="opcount gave float32"):
        run(other_dtype)

    def on_the_host(backend):
        return np.ones(3) * 2  # ignores the backend

    with pytest.raises(AssertionError, match="not its arrays"):
        run(on_the_host)


def test_activation_values(xp):
    x = xp.asarray([-1000.0, -1.0, 0.0, 2.0, 1000.0])
    assert_close(ReLU().forward(x), [0, 0, 0, 2, 1000])
    s = Sigmoid().forward(x)
    with np.errstate(over="ignore"):  # the naive formula overflows where ours does not
        assert_close(s, 1 / (1 + np.exp(-np.array([-1000.0, -1, 0, 2, 1000]))), rtol=1e-12)
    assert bool(xp.isfinite(s).all())  # no overflow at ±1000


def test_backward_does_not_mutate_dout(xp, rng):
    """The book's ReLU writes into dout; ours must not."""
    x = xp.asarray(rng.standard_normal((5, 4)))
    for layer in (ReLU(), Sigmoid(), Tanh(), Dropout(0.5, rng=xp.random.default_rng(0))):
        layer.forward(x, train=True)
        dout = xp.asarray(rng.standard_normal((5, 4)))
        before = dout.copy()
        layer.backward(dout)
        assert_close(dout, before, rtol=0)


def test_batchnorm_gradients(rng):
    gamma = rng.uniform(0.5, 1.5, 6)
    beta = rng.standard_normal(6)
    layer = BatchNorm(gamma, beta, momentum=0.9, eps=1e-5)
    x = rng.standard_normal((8, 6)) * 3 + 1
    _check_layer(layer, x, [(gamma, "dgamma"), (beta, "dbeta")])


def test_batchnorm_statistics(xp, rng):
    d = 5
    layer = BatchNorm(xp.ones(d), xp.zeros(d), momentum=0.9, eps=1e-5)
    x = xp.asarray(rng.standard_normal((64, d)) * 2 + 3)
    out = layer.forward(x, train=True)
    assert_close(out.mean(axis=0), np.zeros(d), atol=1e-12)
    assert_close(out.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=1e-12)
    # running ← 0.9·running + 0.1·batch (biased variance), from mean 0 / var 1
    assert_close(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-12)
    assert_close(layer.running_var, 0.9 + 0.1 * x.var(axis=0), rtol=1e-12)
    ev = layer.forward(x, train=False)
    assert_close(ev, (x - layer.running_mean) / xp.sqrt(layer.running_var + 1e-5), rtol=1e-12)


def test_batchnorm_backward_formula_matches_chain_rule(xp, rng):
    """The two-reduction dx equals the step-by-step chain rule of the book's BatchNorm."""
    x = xp.asarray(rng.standard_normal((10, 3)))
    gamma, beta = xp.asarray([0.5, 1.0, 2.0]), xp.zeros(3)
    dy = xp.asarray(rng.standard_normal((10, 3)))
    rm, rv = xp.zeros(3), xp.ones(3)
    _, mean, invstd = batchnorm_forward_train(x, gamma, beta, rm, rv, 0.9, 1e-7)
    dx, dgamma, dbeta = bn_backward(batchnorm_backward, dy, x, gamma, mean, invstd)
    n, xc = x.shape[0], x - mean  # the book's backward, line by line
    std = 1 / invstd
    xn = xc / std
    dxn = gamma * dy
    dxc = dxn / std
    dstd = -((dxn * xc) / (std * std)).sum(axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    ref = dxc - dxc.mean(axis=0)
    assert_close(dx, ref, rtol=1e-10, atol=1e-12)
    assert_close(dgamma, (xn * dy).sum(axis=0), rtol=1e-12)
    assert_close(dbeta, dy.sum(axis=0), rtol=1e-12)


def test_batchnorm_refuses_batch_of_one(xp):
    layer = BatchNorm(xp.ones(3), xp.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        layer.forward(xp.ones((1, 3)), train=True)
    assert layer.forward(xp.ones((1, 3)), train=False).shape == (1, 3)


def test_dropout_inverted_and_book_forms(xp):
    x = xp.ones((200, 500))
    inv = Dropout(0.3, rng=xp.random.default_rng(0))
    out = inv.forward(x, train=True)
    kept = float((out > 0).mean())
    assert abs(kept - 0.7) < 0.01
    assert_close(out[out > 0], np.full(int((out > 0).sum()), 1 / 0.7), rtol=1e-12)
    assert_close(inv.forward(x, train=False), x, rtol=0)
    book = Dropout(0.3, inverted=False, rng=xp.random.default_rng(0))
    assert set(np.unique(to_numpy(book.forward(x, train=True)))) <= {0, 1}
    assert_close(book.forward(x, train=False), 0.7 * x, rtol=1e-12)
    # the mask of the last training forward is the one backward uses
    m = inv.forward(x, train=True)
    assert_close(inv.backward(xp.ones_like(x)), m, rtol=1e-12)


@pytest.mark.parametrize("onehot", [False, True])
def test_softmax_with_loss(xp, rng, onehot):
    x = xp.asarray(rng.standard_normal((7, 4)) * 3)
    t_ids = rng.integers(0, 4, 7)
    t = xp.asarray(np.eye(4)[t_ids] if onehot else t_ids)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    xn = to_numpy(x)
    p = np.exp(xn - xn.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert abs(float(loss) - -np.log(p[np.arange(7), t_ids]).mean()) < 1e-12
    dx = layer.backward(1.0)
    g = numerical_gradient(lambda: layer.forward(x, t), x)
    assert relative_difference(dx, g) < 1e-7


def test_softmax_no_overflow(xp):
    layer = SoftmaxWithLoss()
    loss = layer.forward(xp.asarray([[1000.0, 0.0], [-1000.0, 0.0]]), xp.asarray([0, 0]))
    assert abs(float(loss) - 500.0) < 1e-9
    assert bool(xp.isfinite(layer.backward()).all())


def test_layer_argument_errors(xp):
    with pytest.raises(ValueError, match="W must be"):
        Affine(xp.ones((3, 2)), xp.ones(3))
    with pytest.raises(TypeError, match="dtypes differ"):
        Affine(xp.ones((3, 2)), xp.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match="ratio"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(xp.ones(2), xp.zeros(2), eps=0)
    with pytest.raises(ValueError, match="expects 3"):
        Affine(xp.ones((3, 2)), xp.ones(2)).forward(xp.ones((4, 5)))
