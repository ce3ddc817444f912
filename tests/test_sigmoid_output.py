"""The course's binary output: MultiLayerNet(..., output_size=1, output="sigmoid") — one
logit, the binary cross-entropy from the logit, labels 0/1, accuracy at 0.5."""

import numpy as np
import pytest
from conftest import assert_close

from accel import MultiLayerNet, Trainer, datasets, dispatch, gradcheck, optim
from accel import functional as F
from accel.backend import to_numpy
from accel.layers import SigmoidWithLoss


def binary_net(backend, **kw):
    args = dict(activation="relu", weight_init="he", batchnorm=True, weight_decay=0.1,
                dtype=np.float64, backend=backend, seed=0, output="sigmoid")
    args.update(kw)
    return MultiLayerNet(6, [8, 5], 1, **args)


def data(xp, n=7, d=6, seed=1):
    rng = np.random.default_rng(seed)
    return xp.asarray(rng.standard_normal((n, d))), xp.asarray(rng.integers(0, 2, n))


def course_cost(a, y):
    """The course's compute_cost: −(1/m)·Σ[y·log a + (1 − y)·log(1 − a)]."""
    return -np.mean(y * np.log(a) + (1 - y) * np.log(1 - a))


def test_loss_is_the_course_binary_cross_entropy(backend, xp):
    net = binary_net(backend, weight_decay=0.0, batchnorm=False)
    x, t = data(xp)
    z = to_numpy(net.predict(x))
    assert z.shape == (7, 1)  # predict returns the logit
    a = 1 / (1 + np.exp(-z[:, 0]))
    assert net.loss(x, t) == pytest.approx(course_cost(a, to_numpy(t)), rel=1e-12)
    # with weight decay: + ½λΣW² (the course's λ/(2m)·ΣW² is weight_decay = λ/m)
    wd = binary_net(backend, weight_decay=0.3, batchnorm=False)
    w2 = sum(float((to_numpy(wd.params[f"W{i}"]) ** 2).sum()) for i in (1, 2, 3))
    assert wd.loss(x, t) == pytest.approx(course_cost(a, to_numpy(t)) + 0.15 * w2, rel=1e-12)


def test_the_logit_form_is_exact_where_the_probability_form_breaks(xp):
    z = xp.asarray([-800.0, -30.0, -1.0, 0.0, 2.0, 40.0, 800.0])
    t = xp.asarray([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    losses, dz = F.sigmoid_binary_cross_entropy(z, t)
    n = 7
    # exact values: for t=1 the loss is log(1 + e^−z), for t=0 log(1 + e^z)
    expected = np.array([800.0, np.log1p(np.exp(-30.0)), np.log1p(np.exp(1.0)), np.log(2.0),
                         np.log1p(np.exp(-2.0)), 40.0 + np.log1p(np.exp(-40.0)), 800.0]) / n
    assert_close(losses, expected, rtol=1e-14)
    sig = 1 / (1 + np.exp(-np.clip(to_numpy(z), -700, 700)))
    assert_close(dz, (sig - to_numpy(t)) / n, rtol=1e-12, atol=1e-300)
    assert bool(xp.isfinite(losses).all()) and bool(xp.isfinite(dz).all())


@pytest.mark.parametrize("batchnorm", [False, True])
def test_gradient_check(backend, xp, batchnorm):
    net = binary_net(backend, batchnorm=batchnorm)
    x, t = data(xp)
    result = gradcheck.check_network(net, x, t)
    assert result.difference < 1e-7, result.report()
    assert set(result.per_param) == set(net.params)


def test_layer_gradient_check(xp):
    layer = SigmoidWithLoss()
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((5, 1)) * 3)
    t = xp.asarray([0, 1, 1, 0, 1])
    layer.forward(x, t)
    g = layer.backward(1.0)
    g_num = gradcheck.numerical_gradient(lambda: layer.forward(x, t), x)
    assert gradcheck.relative_difference(g, g_num) < 1e-9
    layer.forward(x, t)  # the numerical gradient left it at a perturbed x
    assert_close(layer.backward(2.0), 2 * g)
    assert_close(layer.y, 1 / (1 + np.exp(-to_numpy(x))), rtol=1e-12)


def test_labels_as_ints_floats_bools_or_a_column(backend, xp):
    net = binary_net(backend)
    x, t = data(xp)
    want = net.loss(x, t)
    for same in (t.astype(xp.float32), t.astype(bool), t.reshape(-1, 1), to_numpy(t).tolist()):
        assert net.loss(x, same) == want
    with pytest.raises(ValueError, match="only 0 and 1.*got 2"):
        net.loss(x, xp.asarray([0, 1, 2, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        net.loss(x, xp.full(7, 0.5))
    with pytest.raises(ValueError, match=r"shape \(7,\) or \(7, 1\)"):
        net.loss(x, xp.eye(2)[t])


def test_accuracy_at_one_half(backend, xp):
    net = binary_net(backend, batchnorm=False)
    x, _ = data(xp, n=50)
    z = to_numpy(net.predict(x))[:, 0]
    t = (z > 0).astype(np.int64)  # the net's own predictions: all right
    assert net.accuracy(x, t) == 1.0
    t[:10] = 1 - t[:10]
    assert net.accuracy(x, t) == pytest.approx(0.8)
    assert net.accuracy(x, t.astype(bool), batch_size=7) == pytest.approx(0.8)


def test_fused_path_and_reference_agree(backend, xp):
    x, t = data(xp, n=32)
    out = {}
    for path in ("fused", "reference"):
        net = binary_net(backend, dtype=np.float32, activation="tanh")
        with dispatch.use(path):
            loss, grads = net.loss_and_grads(*net.prepare(x, t))
            out[path] = float(loss), to_numpy(grads.flat).copy()
    assert out["fused"][0] == pytest.approx(out["reference"][0], rel=1e-5)
    np.testing.assert_allclose(out["fused"][1], out["reference"][1], rtol=1e-4, atol=1e-6)


def test_output_arguments_and_checkpoint(backend, tmp_path):
    with pytest.raises(ValueError, match="output_size=1, got output_size=2"):
        MultiLayerNet(2, [3], 2, output="sigmoid")
    with pytest.raises(ValueError, match="output='logistic'"):
        MultiLayerNet(2, [3], 1, output="logistic")
    net = binary_net(backend)
    assert net.config()["output"] == "sigmoid" and "output='sigmoid'" in repr(net)
    back = MultiLayerNet.load(net.save(tmp_path / "net.npz"), backend=backend)
    assert back.output == "sigmoid"
    x, t = data(back.backend.xp)
    assert back.loss(x, t) == net.loss(x, t)


def test_trainer_learns_moons_with_one_sigmoid_unit(backend):
    (x, t), (xt, tt) = datasets.load("moons", n_samples=600, noise=0.1, seed=0)
    net = MultiLayerNet(2, [16, 16], 1, output="sigmoid", backend=backend, seed=0)
    h = Trainer(net, optim.Adam(0.01), x, t, xt, tt, epochs=30, batch_size=32, seed=0,
                verbose=False).fit()
    assert h.test_acc[0] < 0.9 and h.test_acc[-1] >= 0.95
