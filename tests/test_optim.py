"""Optimizers against steps computed by hand (and by an independent scalar loop)."""

import math

import numpy as np
import pytest
from conftest import assert_close

from accel import MultiLayerNet, optim
from accel.backend import to_numpy


def run(opt, xp, grads, p0=1.0, dtype=np.float64):
    """Apply ``opt`` to one scalar parameter with the given gradient sequence."""
    params = {"w": xp.asarray([p0], dtype=dtype)}
    out = []
    for g in grads:
        opt.update(params, {"w": xp.asarray([g], dtype=dtype)})
        out.append(float(params["w"][0]))
    return out


def test_sgd(xp):
    assert run(optim.SGD(0.1), xp, [0.5, -1.0]) == pytest.approx([0.95, 1.05], abs=1e-15)
    # coupled L2: g + wd·p = 0.5 + 0.2·1
    assert run(optim.SGD(0.1, weight_decay=0.2), xp, [0.5]) == pytest.approx([0.93], abs=1e-15)


def test_momentum_book_and_course_forms(xp):
    # book: v = 0.9v − 0.1g, p += v  →  v1 = −0.1, p = 0.9; v2 = −0.19, p = 0.71
    assert run(optim.Momentum(0.1, 0.9), xp, [1, 1]) == pytest.approx([0.9, 0.71], abs=1e-15)
    # course: v = 0.9v + 0.1g, p −= 0.1v → v1 = 0.1, p = 0.99; v2 = 0.19, p = 0.971
    assert run(optim.Momentum(0.1, 0.9, dampening=0.9), xp, [1, 1]) == pytest.approx(
        [0.99, 0.971], abs=1e-15)


def test_nesterov_book_form(xp):
    # p uses the previous v: p = 1 + 0.81·0 − 1.9·0.1 = 0.81, then v1 = −0.1;
    # p = 0.81 + 0.81·(−0.1) − 0.19 = 0.539, then v2 = 0.9·(−0.1) − 0.1 = −0.19
    assert run(optim.Nesterov(0.1, 0.9), xp, [1, 1]) == pytest.approx([0.81, 0.539],
                                                                      abs=1e-14)


def test_nesterov_path_of_the_book():
    """f(x, y) = x²/20 + y² from (−7, 2), 30 steps at lr 0.1, μ 0.9: the book's code (since
    its 2021 fix) ends at (0.6896, −0.0007)."""
    params = {"xy": np.array([-7.0, 2.0])}
    opt = optim.Nesterov(lr=0.1, momentum=0.9)
    for _ in range(30):
        x, y = params["xy"]
        opt.update(params, {"xy": np.array([x / 10.0, 2.0 * y])})
    assert params["xy"] == pytest.approx([0.6896, -0.0007], abs=5e-5)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_nesterov_equals_torch_sgd_nesterov_step_by_step(wd):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    w = torch.tensor(p0.copy(), requires_grad=True)
    ref = torch.optim.SGD([w], lr=0.05, momentum=0.8, nesterov=True, weight_decay=wd)
    params = {"w": p0.copy()}
    opt = optim.Nesterov(lr=0.05, momentum=0.8, weight_decay=wd)
    for _ in range(100):
        g = rng.standard_normal(50)
        w.grad = torch.tensor(g.copy())
        ref.step()
        opt.update(params, {"w": g})
        np.testing.assert_allclose(params["w"], w.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_adagrad(xp):
    out = run(optim.AdaGrad(0.1, eps=1e-7), xp, [1, 1])
    p1 = 1 - 0.1 / (1 + 1e-7)
    assert out == pytest.approx([p1, p1 - 0.1 / (math.sqrt(2) + 1e-7)], abs=1e-15)


def test_rmsprop(xp):
    out = run(optim.RMSProp(0.1, decay_rate=0.99, eps=1e-7), xp, [1, 2])
    h1 = 0.01
    p1 = 1 - 0.1 / (math.sqrt(h1) + 1e-7)
    h2 = 0.99 * h1 + 0.01 * 4
    assert out == pytest.approx([p1, p1 - 0.2 / (math.sqrt(h2) + 1e-7)], abs=1e-14)


def scalar_adam(grads, lr, b1, b2, eps, folded=False, decoupled=0.0):
    """An independent scalar Adam, following torch.optim.Adam's documented algorithm."""
    p, m, v, out = 1.0, 0.0, 0.0, []
    for t, g in enumerate(grads, 1):
        p *= 1 - lr * decoupled
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if folded:  # the book: lr_t = lr·√(1 − β2ᵗ)/(1 − β1ᵗ); p −= lr_t·m/(√v + ε)
            p -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + eps)
        else:
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            p -= lr * mhat / (math.sqrt(vhat) + eps)
        out.append(p)
    return out


GRADS = [1.0, -2.0, 0.5, 3.0, 0.0, -0.1]


def test_adam_first_step_is_lr(xp):
    # m̂ = g, v̂ = g², so the first step is lr·g/(|g| + ε) whatever g is
    assert run(optim.Adam(0.01), xp, [4.0]) == pytest.approx([1 - 0.01 * 4 / (4 + 1e-8)],
                                                             abs=1e-15)


def test_adam_standard_and_folded(xp):
    assert run(optim.Adam(0.1, 0.9, 0.999, 1e-8), xp, GRADS) == pytest.approx(
        scalar_adam(GRADS, 0.1, 0.9, 0.999, 1e-8), abs=1e-13)
    assert run(optim.Adam(0.1, 0.8, 0.99, 1e-7, folded=True), xp, GRADS) == pytest.approx(
        scalar_adam(GRADS, 0.1, 0.8, 0.99, 1e-7, folded=True), abs=1e-13)


def test_adamw_decoupled_decay(xp):
    assert run(optim.AdamW(0.1, weight_decay=0.1), xp, [0.0]) == pytest.approx([0.99],
                                                                              abs=1e-15)
    assert run(optim.AdamW(0.1, weight_decay=0.05), xp, GRADS) == pytest.approx(
        scalar_adam(GRADS, 0.1, 0.9, 0.999, 1e-8, decoupled=0.05), abs=1e-13)


def test_lr_can_change_between_steps(xp):
    opt = optim.SGD(0.1)
    params = {"w": xp.asarray([1.0])}
    opt.update(params, {"w": xp.asarray([1.0])})
    opt.lr = 0.5
    opt.update(params, {"w": xp.asarray([1.0])})
    assert float(params["w"][0]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        opt.lr = -1


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_flat_buffer_step_equals_per_array_steps(backend, xp, name):
    """One step over the net's flat buffer = one step per named array."""
    net = MultiLayerNet(6, [5], 3, batchnorm=True, dtype=np.float64, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    x, t = xp.asarray(rng.standard_normal((8, 6))), xp.asarray(rng.integers(0, 3, 8))
    copy = {k: v.copy() for k, v in net.params.items()}
    flat_opt, dict_opt = optim.get_optimizer(name, lr=0.01), optim.get_optimizer(name, lr=0.01)
    for _ in range(3):
        grads = net.gradient(x, t)
        plain = {k: g.copy() for k, g in grads.items()}
        flat_opt.update(net.params, grads)
        dict_opt.update(copy, plain)
    assert list(flat_opt.state) == ["flat"]
    assert set(dict_opt.state) == set(net.params)
    for k in copy:
        assert_close(net.params[k], copy[k], rtol=1e-12, atol=1e-15)


def test_float32_state_stays_float32(xp):
    opt = optim.Adam()
    params = {"w": xp.ones(4, dtype=np.float32)}
    opt.update(params, {"w": xp.ones(4, dtype=np.float32)})
    assert params["w"].dtype == np.float32
    assert all(s.dtype == np.float32 for s in opt.state["w"])


@pytest.mark.parametrize("make, match", [
    (lambda: optim.SGD(0), "lr must be > 0, got 0"),
    (lambda: optim.Adam(beta1=1.0), "beta1 must be in"),
    (lambda: optim.Adam(beta2=-0.1), "beta2 must be in"),
    (lambda: optim.Adam(eps=0), "eps must be > 0"),
    (lambda: optim.RMSProp(decay_rate=1.5), "decay_rate"),
    (lambda: optim.Momentum(momentum=1), "momentum"),
    (lambda: optim.SGD(0.1, weight_decay=-1), "weight_decay"),
    (lambda: optim.get_optimizer("lamb"), "optimizer='lamb'"),
    (lambda: optim.SGD("fast"), "lr must be a positive number, got 'fast'"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_mismatched_params_and_grads(xp):
    opt = optim.SGD(0.1)
    with pytest.raises(ValueError, match="different names"):
        opt.update({"a": xp.ones(2)}, {"b": xp.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        opt.update({"a": xp.ones(2)}, {"a": xp.ones(3)})
    with pytest.raises(TypeError, match="dicts"):
        opt.update([xp.ones(2)], [xp.ones(2)])
    params = {"a": xp.ones(2)}
    with pytest.raises(ValueError):
        opt.update(params, {"a": xp.ones(3)})
    assert to_numpy(params["a"]).tolist() == [1, 1]  # nothing changed by the failed call
