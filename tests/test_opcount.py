"""accel.opcount: what counts as one array operation, and the counts of a training step."""

import numpy as np
import pytest
from conftest import assert_close

from accel import MultiLayerNet, dispatch, opcount, optim


@pytest.fixture
def xp():
    return opcount.backend().xp


def test_what_counts_as_one_operation(xp):
    a = xp.arange(12.0).reshape(3, 4)
    b = xp.ones(4)
    with opcount.Count() as c:
        v = a[1:, ::2].T  # views: free
        a.reshape(-1)
        e = xp.empty((5, 5))  # an allocation the next write fills: free
    assert c.total == 0 and e.shape == (5, 5) and v.shape == (2, 2)
    cases = [
        (lambda: a + b, {"add": 1}),
        (lambda: a.sum(axis=0), {"add.reduce": 1}),
        (lambda: a @ a.T, {"matmul": 1}),
        (lambda: a[[0, 2]], {"gather": 1}),
        (lambda: a.copy(), {"copy": 1}),
        (lambda: a.argmax(axis=1), {"argmax": 1}),
        (lambda: xp.zeros(3), {"zeros": 1}),
        (lambda: xp.maximum(a, 0, out=a), {"maximum": 1}),
        (lambda: np.exp(a), {"exp": 1}),  # plain numpy functions on counting arrays count too
    ]
    for fn, expected in cases:
        with opcount.Count() as c:
            fn()
        assert dict(c.ops) == expected, (expected, dict(c.ops))
    with opcount.Count() as c:
        a[0, :2] += 1  # a kernel for the add, one for the store of the slice
    assert dict(c.ops) == {"add": 1, "setitem": 1}


def test_results_stay_counting_arrays_and_equal_numpy(xp):
    a = xp.asarray(np.linspace(-1, 1, 6).reshape(2, 3))
    with opcount.Count() as c:
        y = np.tanh(a) * 2
        s = y.sum()
    assert isinstance(y, opcount.CountingArray) and isinstance(s, opcount.CountingArray)
    assert float(s) == pytest.approx(float((np.tanh(np.linspace(-1, 1, 6)) * 2).sum()))
    assert c.total == 3


def _mlp(batchnorm, backend):
    return MultiLayerNet(784, [100] * 4, 10, batchnorm=batchnorm, backend=backend, seed=0)


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128)


def test_counting_changes_no_number():
    x, t = _data()
    counted, plain = _mlp(True, opcount.backend()), _mlp(True, "numpy")
    opt_c, opt_p = optim.Adam(lr=1e-2), optim.Adam(lr=1e-2)
    for _ in range(3):
        opcount.training_step(counted, opt_c, x, t)
        opt_p.update(plain.params, plain.loss_and_grads(*plain.prepare(x, t))[1])
    np.testing.assert_array_equal(np.asarray(counted.params.flat), plain.params.flat)
    assert_close(np.asarray(counted.buffers.flat), plain.buffers.flat, rtol=0, atol=0)


def test_a_training_step_of_the_book_mlp():
    """784-100x4-10 with Adam: each fused kernel is one operation; per pass: x·W, f(·+b),
    the backward kernel, dW and dx (none below the first layer); the last Affine adds and
    sums its bias alone; the loss is one kernel and its sum; Adam one kernel."""
    x, t = _data()
    net, opt = _mlp(False, opcount.backend()), optim.Adam()
    opcount.training_step(net, opt, x, t)  # the first step also allocates Adam's state
    count = opcount.training_step(net, opt, x, t)
    assert dict(count.by_scope) == {"Affine+ReLU": 4 * 5 - 1, "Affine": 5,
                                    "SoftmaxWithLoss": 2, "optimizer": 1}
    assert count.total == 27 <= 40
    assert count.ops["kernel adam"] == 1 and count.ops["matmul"] == 14
    with dispatch.use("reference"):  # every op an xp call: the readable ground truth
        ref = opcount.training_step(net, opt, x, t)
    assert ref.total > 2 * count.total
    assert ref.by_scope["optimizer"] > 1 and "kernel adam" not in ref.ops


def test_batchnorm_step_counts_each_layer_type():
    x, t = _data()
    net, opt = _mlp(True, opcount.backend()), optim.Adam()
    opcount.training_step(net, opt, x, t)
    count = opcount.training_step(net, opt, x, t)
    assert count.ops["kernel batchnorm_forward_train"] == 4
    assert count.ops["kernel batchnorm_backward"] == 4
    # each BatchNorm: its two kernels, which write dγ, dβ straight into the gradient buffer
    assert count.by_scope["BatchNorm"] == 2 * 4 and "setitem" not in count.ops
    assert set(count.by_scope) == {"Affine", "BatchNorm", "ReLU", "SoftmaxWithLoss",
                                   "optimizer"}


def test_a_network_not_built_to_be_counted_is_refused():
    x, t = _data()
    with pytest.raises(ValueError, match="backend=opcount.backend"):
        opcount.training_step(_mlp(False, "numpy"), optim.SGD(lr=0.1), x, t)
