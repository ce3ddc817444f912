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
    """One step over the net's flat buffer = one step per named array, the plain dict told
    by a mask which arrays are the weight matrices (the net's params know it); with weight
    decay and gradient-norm clipping."""
    net = MultiLayerNet(6, [5], 3, batchnorm=True, dtype=np.float64, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    x, t = xp.asarray(rng.standard_normal((8, 6))), xp.asarray(rng.integers(0, 3, 8))
    copy = {k: v.copy() for k, v in net.params.items()}
    kw = dict(lr=0.01, weight_decay=0.05, clip_norm=0.5)
    flat_opt = optim.get_optimizer(name, **kw)
    dict_opt = optim.get_optimizer(name, decay_mask=["W1", "W2"], **kw)
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


# -- AdaDelta, gradient-norm clipping and the weight-decay rule, against torch

TORCH = {  # name → (accel kwargs, torch.optim class, its kwargs): the same update rule
    "sgd": (dict(lr=0.05), "SGD", dict(lr=0.05)),
    "momentum": (dict(lr=0.05, momentum=0.9), "SGD", dict(lr=0.05, momentum=0.9)),
    "nesterov": (dict(lr=0.05, momentum=0.8), "SGD", dict(lr=0.05, momentum=0.8,
                                                          nesterov=True)),
    "adagrad": (dict(lr=0.05, eps=1e-10), "Adagrad", dict(lr=0.05, eps=1e-10)),
    "rmsprop": (dict(lr=0.01, decay_rate=0.99, eps=1e-8), "RMSprop",
                dict(lr=0.01, alpha=0.99, eps=1e-8)),
    "adadelta": (dict(), "Adadelta", dict()),  # both default to lr 1.0, ρ 0.9, ε 1e-6
    "adam": (dict(lr=0.01), "Adam", dict(lr=0.01)),
    "adamw": (dict(lr=0.01), "AdamW", dict(lr=0.01)),
}
SHAPES = {"W": (7, 5), "b": (5,)}


def _grads(rng, step, shapes):
    """Gradients whose global norm is far above 1.5 on odd steps, far below on even ones."""
    scale = 3.0 if step % 2 else 0.05
    return {k: rng.standard_normal(s) * scale for k, s in shapes.items()}


@pytest.mark.parametrize("clip_norm", [None, 1.5])
@pytest.mark.parametrize("name", sorted(TORCH))
def test_a_plain_dict_steps_as_torch_does(name, clip_norm):
    """A plain dict decays every array (torch's weight_decay); clip_norm=c is
    torch.nn.utils.clip_grad_norm_(params, c) and then torch's step: 60 steps, the norm
    above c on every other one."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    ours, torch_name, torch_kw = TORCH[name]
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    ref = getattr(torch.optim, torch_name)(list(tensors.values()), weight_decay=0.01,
                                           **torch_kw)
    opt = optim.get_optimizer(name, weight_decay=0.01, clip_norm=clip_norm, **ours)
    params = {k: v.copy() for k, v in p0.items()}
    clipped = 0
    for step in range(60):
        grads = _grads(rng, step, SHAPES)
        for k, w in tensors.items():
            w.grad = torch.tensor(grads[k].copy())
        if clip_norm is not None:
            clipped += float(torch.nn.utils.clip_grad_norm_(list(tensors.values()),
                                                            clip_norm)) > clip_norm
        ref.step()
        opt.update(params, grads)
        for k in SHAPES:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=f"{k} at step {step}")
    assert clipped == (30 if clip_norm else 0)


@pytest.mark.parametrize("name", sorted(TORCH))
def test_a_network_steps_as_torch_with_weight_decay_on_the_weights(backend, name):
    """The flat buffer in one fused call (and the norm in one reduction) = torch with two
    parameter groups, the weight matrices decayed and the rest not, the usual way to ask
    torch for the book's and the course's rule; clipped by the global norm of all."""
    torch = pytest.importorskip("torch")
    net = MultiLayerNet(6, [5, 4], 3, batchnorm=True, dtype=np.float64, backend=backend,
                        seed=0)
    tensors = {k: torch.tensor(to_numpy(v).copy(), requires_grad=True)
               for k, v in net.params.items()}
    weights = [w for k, w in tensors.items() if k.startswith("W")]
    others = [w for k, w in tensors.items() if not k.startswith("W")]
    ours, torch_name, torch_kw = TORCH[name]
    ref = getattr(torch.optim, torch_name)([{"params": weights, "weight_decay": 0.05},
                                            {"params": others, "weight_decay": 0.0}],
                                           **torch_kw)
    opt = optim.get_optimizer(name, weight_decay=0.05, clip_norm=1.5, **ours)
    rng = np.random.default_rng(1)
    shapes = {k: v.shape for k, v in net.params.items()}
    for step in range(20):
        grads = _grads(rng, step, shapes)
        for k, w in tensors.items():
            w.grad = torch.tensor(grads[k].copy())
            net.grads[k] = net.backend.asarray(grads[k])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), 1.5)
        ref.step()
        opt.update(net.params, net.grads)
    assert list(opt.state) == ["flat"]
    for k, w in tensors.items():
        np.testing.assert_allclose(to_numpy(net.params[k]), w.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=k)


def test_adadelta_by_hand(xp):
    """DeZero's AdaDelta (lr 1, ρ 0.95): Δ = √((u + ε)/(h + ε))·g, an independent loop."""
    grads, rho, eps = [1.0, -2.0, 0.5, 3.0, 0.0, -0.1], 0.95, 1e-6
    p, h, u, want = 1.0, 0.0, 0.0, []
    for g in grads:
        h = rho * h + (1 - rho) * g * g
        dx = math.sqrt((u + eps) / (h + eps)) * g
        u = rho * u + (1 - rho) * dx * dx
        p -= dx
        want.append(p)
    assert run(optim.AdaDelta(lr=1.0, rho=rho, eps=eps), xp, grads) == pytest.approx(
        want, abs=1e-14)
    # the first step from zero state moves by √ε/√((1 − ρ)g² + ε)·g ≈ 0.0045 for g = 1
    assert 1 - run(optim.AdaDelta(), xp, [1.0])[0] == pytest.approx(
        math.sqrt(1e-6) / math.sqrt(0.1 + 1e-6), rel=1e-12)


@pytest.mark.parametrize("mask", ["weights", "all"])
def test_the_networks_l2_term_and_an_optimizers_weight_decay_are_one_rule(mask):
    """½λΣθ² in the loss (over the parameters ``mask`` names) and the optimizer's coupled
    λθ over the same ones take the same steps."""
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    kw = dict(batchnorm=True, dtype=np.float64, seed=0)
    in_loss = MultiLayerNet(6, [5, 4], 3, weight_decay=0.1, decay_mask=mask, **kw)
    in_opt = MultiLayerNet(6, [5, 4], 3, **kw)
    opt_a, opt_b = optim.SGD(0.1), optim.SGD(0.1, weight_decay=0.1, decay_mask=mask)
    for _ in range(5):
        opt_a.update(in_loss.params, in_loss.gradient(x, t))
        opt_b.update(in_opt.params, in_opt.gradient(x, t))
    np.testing.assert_allclose(in_loss.params.flat, in_opt.params.flat, rtol=1e-12, atol=1e-15)
    assert in_loss.n_decayed == (in_loss.n_weights if mask == "weights"
                                 else in_loss.params.flat.size)
    # the loss's term: ½λ over the same parameters (γ = 1 counts under "all")
    theta = in_loss.params.flat[:in_loss.n_decayed]
    plain = MultiLayerNet(6, [5, 4], 3, **kw)
    plain.params.flat[...] = in_loss.params.flat
    plain.buffers.flat[...] = in_loss.buffers.flat  # BatchNorm's running statistics
    assert in_loss.loss(x, t) - plain.loss(x, t) == pytest.approx(0.05 * theta @ theta,
                                                                  rel=1e-12)


def test_which_arrays_decay_comes_from_the_container(xp):
    """A network's params decay their weight block; a plain dict every array, unless a mask
    names them. AdamW with zero gradients only shrinks: p ← (1 − lr·wd)·p."""
    def shrink(params, **kw):
        opt = optim.AdamW(lr=0.1, weight_decay=0.5, **kw)
        before = {k: to_numpy(v).copy() for k, v in params.items()}
        grads = {k: xp.zeros_like(v) for k, v in params.items()}
        if hasattr(params, "flat"):  # a network's: its flat gradient buffer
            net.grads.flat[...] = 0
            grads = net.grads
        opt.update(params, grads)
        return {k: float(np.max(to_numpy(params[k]) / before[k])) for k in params}, opt

    def ones():
        return {"W": xp.ones((3, 2)), "b": xp.ones(2)}

    assert shrink(ones())[0] == {"W": 0.95, "b": 0.95}
    assert shrink(ones(), decay_mask=["W"])[0] == {"W": 0.95, "b": 1.0}
    assert shrink(ones(), decay_mask="all")[0] == {"W": 0.95, "b": 0.95}

    net = MultiLayerNet(4, [3], 2, batchnorm=True, dtype=np.float64, seed=0,
                        backend="numpy" if xp is np else "cupy")
    def reset():
        net.params.flat[...] = 1.0
        return net.params

    factors, opt = shrink(reset())
    assert factors == {k: 0.95 if k[0] == "W" else 1.0 for k in net.params}
    assert list(opt.state) == ["flat"]  # still one fused call over the whole buffer
    factors, opt = shrink(reset(), decay_mask=["W2", "W1"])  # the weight block, named
    assert factors == {k: 0.95 if k[0] == "W" else 1.0 for k in net.params}
    assert list(opt.state) == ["flat"]
    factors, opt = shrink(reset(), decay_mask=["b1"])  # not the leading block: per array
    assert factors == {k: 0.95 if k == "b1" else 1.0 for k in net.params}
    assert set(opt.state) == set(net.params)
    assert list(shrink(reset(), decay_mask="all")[0].values()) == [0.95] * len(net.params)


def test_clip_norm_can_be_changed_and_turned_off(xp):
    """clip_norm is read at each step; None gives the unclipped step again."""
    opt = optim.SGD(1.0, clip_norm=0.5)
    params = {"w": xp.asarray([0.0, 0.0])}
    opt.update(params, {"w": xp.asarray([3.0, 4.0])})  # ‖g‖ = 5: scaled to 0.5
    assert to_numpy(params["w"]) == pytest.approx([-0.3, -0.4], rel=1e-6)
    opt.clip_norm = None
    opt.update(params, {"w": xp.asarray([3.0, 4.0])})
    assert to_numpy(params["w"]) == pytest.approx([-3.3, -4.4], rel=1e-6)
    opt.clip_norm = 10.0  # above the norm: no change to g
    opt.update(params, {"w": xp.asarray([3.0, 4.0])})
    assert to_numpy(params["w"]) == pytest.approx([-6.3, -8.4], rel=1e-6)


@pytest.mark.parametrize("make, error, match", [
    (lambda: optim.SGD(0.1, decay_mask="bias"), ValueError,
     "decay_mask='bias' is not one of \\['weights', 'all'\\]"),
    (lambda: optim.Adam(decay_mask=3), TypeError, "decay_mask must be 'weights', 'all' or"),
    (lambda: optim.Adam(decay_mask=["W", 1]), TypeError, "decay_mask names must be strings"),
    (lambda: optim.Adam(clip_norm=0), ValueError, "clip_norm must be > 0, got 0"),
    (lambda: optim.Adam(clip_norm="big"), TypeError, "clip_norm must be a positive number"),
    (lambda: optim.AdaDelta(rho=1.0), ValueError, "rho must be in \\[0, 1\\), got 1.0"),
    (lambda: optim.AdaDelta(eps=-1), ValueError, "eps must be > 0"),
    (lambda: MultiLayerNet(4, [3], 2, decay_mask=["W1"]), ValueError, "decay_mask="),
])
def test_bad_decay_masks_and_clip_norms(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_mask_naming_missing_arrays_is_refused_before_anything_changes(xp):
    opt = optim.SGD(0.1, weight_decay=0.1, decay_mask=["W", "gamma"])
    params = {"W": xp.ones(2), "b": xp.ones(2)}
    with pytest.raises(ValueError, match="decay_mask names \\['gamma'\\], which are not"):
        opt.update(params, {"W": xp.ones(2), "b": xp.ones(2)})
    assert opt.t == 0 and to_numpy(params["W"]).tolist() == [1, 1]
