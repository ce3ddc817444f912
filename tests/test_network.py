"""MultiLayerNet: flat buffer, gradient check of the whole net (NumPy) and its training steps
on a device against NumPy's, conventions and bad input."""

import numpy as np
import pytest
from conftest import assert_close, numpy_device_allclose

from accel import MultiLayerNet, gradcheck, optim
from accel.backend import to_numpy


def small_net(backend, **kw):
    args = dict(activation="relu", weight_init="he", batchnorm=True, weight_decay=0.1,
                dtype=np.float64, backend=backend, seed=0)
    args.update(kw)
    return MultiLayerNet(10, [8, 7], 3, **args)


def data(xp, n=6, d=10, c=3, seed=1):
    rng = np.random.default_rng(seed)
    return xp.asarray(rng.standard_normal((n, d))), xp.asarray(rng.integers(0, c, n))


def test_params_and_grads_are_views_of_flat_buffers(backend, xp):
    net = small_net(backend)
    n = sum(p.size for p in net.params.values())
    assert net.params.flat.shape == (n,) and net.grads.flat.shape == (n,)
    net.params.flat[:] = 0.5
    assert all(float(p.mean()) == 0.5 for p in net.params.values())
    x, t = data(xp)
    grads = net.gradient(x, t)
    assert grads.flat is net.grads.flat
    for k, g in grads.items():
        a, b = net.grads.offsets()[k]
        assert_close(g.ravel(), net.grads.flat[a:b], rtol=0)
    # assigning a name copies into the view: the link to flat is kept
    net.params["W1"] = xp.ones((10, 8))
    assert float(net.params.flat[slice(*net.params.offsets()["W1"])].sum()) == 80
    # the weights come first: one slice for the decayed group
    assert net.params.offsets()["W1"][0] == 0
    assert net.n_weights == 10 * 8 + 8 * 7 + 7 * 3


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_whole_network_gradient_check(activation, batchnorm):
    net = small_net("numpy", activation=activation, batchnorm=batchnorm)
    x, t = data(np)
    result = gradcheck.check_network(net, x, t)
    assert result.difference < 1e-7, result.report()
    assert result.verdict == "fine"
    assert max(result.per_param.values()) < 1e-6, result.report()
    assert set(result.per_param) == set(net.params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("batchnorm", [False, True])
@numpy_device_allclose(rtol={np.float32: 1e-4, np.float64: 1e-10},
                       atol={np.float32: 1e-5, np.float64: 1e-12})
def test_training_steps_agree_across_backends(backend, activation, batchnorm, dtype):
    """Three training steps (every fused op: the layers', the L2 gradient, clipping and the
    momentum update) on the device against NumPy, from the same weights (the NumPy net's:
    each backend draws its own): the losses, gradients, weights and running statistics.
    With the gradient check above on NumPy, the device's gradients are checked too.
    Momentum, not Adam: Adam's g/√v turns float noise in a zero gradient (a bias before
    BatchNorm) into a step of lr."""
    kw = dict(activation=activation, batchnorm=batchnorm, dtype=dtype, seed=0)
    net = small_net(backend, **kw)
    net.params.flat[...] = backend.asarray(small_net("numpy", **kw).params.flat)
    opt = optim.Momentum(lr=0.1, momentum=0.9, clip_norm=1.0)
    rng = np.random.default_rng(2)
    losses, grads = [], []
    for _ in range(3):
        x, t = net.prepare(backend.asarray(rng.standard_normal((16, 10))),
                           backend.asarray(rng.integers(0, 3, 16)))
        loss, g = net.loss_and_grads(x, t)
        losses.append(loss)
        grads.append(g.flat.copy())
        opt.update(net.params, g)
    return losses, grads, net.params.flat, net.buffers.flat


def test_gradient_check_with_one_hot_labels(backend, xp):
    net = small_net(backend)
    x, t = data(xp)
    onehot = xp.eye(3)[t]
    assert gradcheck.check_network(net, x, onehot).difference < 1e-7
    assert abs(net.loss(x, onehot) - net.loss(x, t)) < 1e-12


def test_weight_decay_is_half_lambda_sum_w2(backend, xp):
    x, t = data(xp)
    a = small_net(backend, weight_decay=0.0, batchnorm=False)
    b = small_net(backend, weight_decay=0.3, batchnorm=False)
    w2 = sum(float((b.params[k] ** 2).sum()) for k in b.params if k.startswith("W"))
    assert abs(b.loss(x, t) - a.loss(x, t) - 0.5 * 0.3 * w2) < 1e-12
    ga, gb = a.gradient(x, t), b.gradient(x, t)
    assert_close(gb["W2"], ga["W2"] + 0.3 * b.params["W2"], rtol=1e-12)
    assert_close(gb["b2"], ga["b2"], rtol=1e-12)  # no decay on biases


@pytest.mark.parametrize("init, std", [("he", np.sqrt(2 / 400)), ("relu", np.sqrt(2 / 400)),
                                       ("xavier", np.sqrt(1 / 400)),
                                       ("sigmoid", np.sqrt(1 / 400)),
                                       ("glorot", np.sqrt(2 / 800)), (0.01, 0.01)])
def test_initial_weight_scale(backend, init, std):
    net = MultiLayerNet(400, [400], 10, weight_init=init, backend=backend, seed=0)
    W = to_numpy(net.params["W1"])
    assert W.dtype == np.float32
    assert abs(W.std() / std - 1) < 0.01
    assert abs(W.mean()) < 0.01 * std * 10
    assert not to_numpy(net.params["b1"]).any()


def test_seeded_construction_is_reproducible(backend):
    a = MultiLayerNet(20, [5], 3, backend=backend, seed=7)
    b = MultiLayerNet(20, [5], 3, backend=backend, seed=7)
    c = MultiLayerNet(20, [5], 3, backend=backend, seed=8)
    assert_close(a.params.flat, b.params.flat, rtol=0)
    assert not np.allclose(to_numpy(a.params.flat), to_numpy(c.params.flat))


def test_dropout_only_in_training(backend, xp):
    net = small_net(backend, dropout=0.5, batchnorm=False)
    x, t = data(xp)
    assert_close(net.predict(x), net.predict(x), rtol=0)
    assert not np.allclose(to_numpy(net.predict(x, train=True)),
                           to_numpy(net.predict(x, train=True)))
    with pytest.raises(ValueError, match="dropout"):
        gradcheck.check_network(net, x, t)


def test_layer_order_per_hidden_layer(backend):
    net = small_net(backend, dropout=0.2)
    names = [type(layer).__name__ for layer in net.layers]
    assert names == ["Affine", "BatchNorm", "ReLU", "Dropout"] * 2 + ["Affine"]


def test_accuracy_and_float32_casting(backend, xp):
    net = MultiLayerNet(10, [8], 3, backend=backend, seed=0)
    x, t = data(xp, n=50)
    scores = to_numpy(net.predict(x))
    assert net.predict(x).dtype == np.float32  # float64 input cast to the net's dtype
    assert net.accuracy(x, t) == pytest.approx((scores.argmax(1) == to_numpy(t)).mean())
    assert net.accuracy(x, t, batch_size=7) == net.accuracy(x, t)


def test_bad_input_names_argument_and_value(backend, xp):
    net = MultiLayerNet(10, [8], 3, backend=backend, seed=0)
    x, t = data(xp)
    with pytest.raises(ValueError, match="10 features"):
        net.loss(xp.ones((6, 9)), t)
    with pytest.raises(ValueError, match="class id 3"):
        net.loss(x, xp.asarray([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="class id -1"):
        net.gradient(x, xp.asarray([0, 1, 2, -1, 0, 1]))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        net.loss(x, t[:5])
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        net.predict(bad)
    with pytest.raises(TypeError, match="uint8"):
        net.predict(xp.ones((6, 10), dtype=np.uint8))
    with pytest.raises(TypeError, match="t class ids must be integers"):
        net.loss(x, xp.zeros(6))
    with pytest.raises(ValueError, match="empty"):
        net.predict(xp.ones((0, 10)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(activation="swish"), "activation='swish'"),
    (dict(weight_init="lecun"), "weight_init='lecun'"),
    (dict(weight_init=-1.0), "weight_init std"),
    (dict(dropout=1.0), "dropout"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(dtype=np.int32), "dtype"),
    (dict(backend="torch"), "backend='torch'"),
    (dict(seed=-1), "seed must be None or an int >= 0, got -1"),
    (dict(seed="abc"), "seed must be None or an int >= 0, got 'abc'"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MultiLayerNet(10, [8], 3, **kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"hidden_sizes\[1\]"):
        MultiLayerNet(10, [8, 0], 3)
    with pytest.raises(TypeError, match="input_size"):
        MultiLayerNet(10.5, [8], 3)


def test_gradcheck_refuses_float32(backend, xp):
    net = MultiLayerNet(10, [8], 3, backend=backend, seed=0)
    x, t = data(xp)
    with pytest.raises(TypeError, match="float64"):
        gradcheck.check_network(net, x, t)


def test_gradcheck_catches_a_wrong_gradient(backend, xp):
    """A broken backward must be flagged 'wrong', or the check proves nothing."""
    net = small_net(backend, batchnorm=False)
    x, t = data(xp)
    layer = net.layers[2]  # the second Affine
    original = layer.backward_linear  # the half that writes dW, fused or not

    def broken(dout):
        dx = original(dout)
        layer.dW *= 1.5
        return dx

    layer.backward_linear = broken
    result = gradcheck.check_network(net, x, t)
    assert result.verdict == "wrong" and result.per_param["W2"] > 1e-3
    assert result.per_param["W3"] < 1e-7


def test_verdict_bands():
    assert gradcheck.verdict(1e-9) == "fine"
    assert gradcheck.verdict(1e-5) == "look closer"
    assert gradcheck.verdict(1e-2) == "wrong"


def test_batchnorm_running_variance_starts_where_asked(backend, xp, tmp_path):
    """PyTorch starts the running variance at 1, the book at 0 (bn_running_var_init=0)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    t = rng.integers(0, 3, 8)
    for init in (1.0, 0.0):
        net = MultiLayerNet(4, [5], 3, batchnorm=True, bn_running_var_init=init,
                            backend=backend, seed=0)
        assert float(net.buffers["running_var1"].max()) == init
        h = to_numpy(net.layers[0].forward(net.prepare(x), True))
        net.gradient(x, t)  # one train-mode pass: running ← 0.9·running + 0.1·batch
        assert_close(net.buffers["running_var1"], 0.9 * init + 0.1 * h.var(axis=0), rtol=1e-5)
        back = MultiLayerNet.load(net.save(tmp_path / f"{init}.npz"), backend=backend)
        assert back.bn_running_var_init == init
