"""Property-based tests (hypothesis): layer gradients over random shapes, loaders over random
corrupted bytes, save → load → same predictions, optimizer math over random hyperparameters."""

import gzip
import hashlib
import math
import time

import numpy as np
import pytest
from conftest import bn_backward
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from accel import MultiLayerNet, optim
from accel.checkpoint import CheckpointError
from accel.datasets import CorruptFileError, load_idx
from accel.gradcheck import numerical_gradient, relative_difference
from accel.layers import Affine, BatchNorm, ReLU, Sigmoid, SoftmaxWithLoss, Tanh

FAST = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
seeds = st.integers(0, 2**32 - 1)


# -- layer gradients over random shapes (float64, NumPy)


def _agree(g, g_num):
    """Relative difference < 1e-6, or an absolute one at the finite difference's noise level
    (a gradient that is nearly 0, e.g. dx of BatchNorm over one feature)."""
    return relative_difference(g, g_num) < 1e-6 or np.linalg.norm(g - g_num) < 1e-9


def _check(layer, x, params, train=True):
    r = np.random.default_rng(1).standard_normal(layer.forward(x, train).shape)
    loss = lambda: (layer.forward(x, train) * r).sum()  # noqa: E731
    layer.forward(x, train)
    dx = layer.backward(r.copy())
    assert _agree(dx, numerical_gradient(loss, x))
    for p, name in params:
        layer.forward(x, train)
        layer.backward(r)
        got = getattr(layer, name).copy()
        assert _agree(got, numerical_gradient(loss, p)), name


@FAST
@given(n=st.integers(1, 5), d_in=st.integers(1, 6), d_out=st.integers(1, 5), seed=seeds)
def test_affine_gradient(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    W, b = rng.standard_normal((d_in, d_out)), rng.standard_normal(d_out)
    _check(Affine(W, b), rng.standard_normal((n, d_in)), [(W, "dW"), (b, "db")])


@FAST
@given(n=st.integers(2, 6), d=st.integers(1, 5), seed=seeds,
       momentum=st.floats(0, 0.99), eps=st.floats(1e-5, 1e-1))
def test_batchnorm_gradient(n, d, seed, momentum, eps):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * 3 + 1
    # two rows that are nearly equal make the variance tiny and the numerical gradient noisy
    assume(np.min(x.var(axis=0)) > 1e-2)
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    _check(BatchNorm(gamma, beta, momentum, eps), x, [(gamma, "dgamma"), (beta, "dbeta")])


@FAST
@given(n=st.integers(1, 5), d=st.integers(1, 6), seed=seeds,
       cls=st.sampled_from([ReLU, Sigmoid, Tanh]))
def test_activation_gradient(n, d, seed, cls):
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[np.abs(x) < 1e-3] = 0.5  # away from ReLU's kink
    _check(cls(), x, [])


@FAST
@given(n=st.integers(1, 5), c=st.integers(2, 6), seed=seeds, one_hot=st.booleans())
def test_softmax_with_loss_gradient(n, c, seed, one_hot):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 3
    t = rng.integers(0, c, n)
    if one_hot:
        t = np.eye(c)[t]
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward(1.0)
    assert relative_difference(dx, numerical_gradient(lambda: layer.forward(x, t), x)) < 1e-6


# -- loaders over random corrupted bytes: only the clear error, never a crash or a hang

damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("replace"), st.binary(max_size=300)),
)


def _damage(raw: bytes, how) -> bytes:
    kind, arg = how
    if kind == "flip":
        b = bytearray(raw)
        for pos, mask in arg:
            b[pos % len(b)] ^= mask
        return bytes(b)
    if kind == "truncate":
        return raw[: int(len(raw) * arg)]
    if kind == "append":
        return raw + arg
    return arg


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage, gz=st.booleans(), seed=seeds)
def test_idx_loader_on_damaged_bytes(tmp_path, how, gz, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (int(rng.integers(1, 6)), 7, 3), dtype=np.uint8)
    raw = bytes([0, 0, 0x08, 3]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()
    sha = hashlib.sha256(raw).hexdigest()
    stored = gzip.compress(raw) if gz else raw
    bad = _damage(stored, how)
    path = tmp_path / "f-idx3-ubyte"
    path.write_bytes(bad)
    start = time.perf_counter()
    try:
        out = load_idx(path, sha256=sha)
    except CorruptFileError as exc:
        assert str(path) in str(exc)
    else:  # only bytes that decode to exactly the same content may pass the hash
        np.testing.assert_array_equal(out, arr)
    try:
        load_idx(path)  # without a hash: a parse error at most
    except CorruptFileError as exc:
        assert str(path) in str(exc)
    assert time.perf_counter() - start < 5


@pytest.fixture(scope="module")
def saved_net(tmp_path_factory):
    net = MultiLayerNet(5, [6], 3, batchnorm=True, dropout=0.1, backend="numpy", seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "net.npz"
    net.save(path)
    return net, path.read_bytes()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_checkpoint_loader_on_damaged_bytes(tmp_path, saved_net, how):
    net, raw = saved_net
    bad = _damage(raw, how)
    path = tmp_path / "net.npz"
    path.write_bytes(bad)
    start = time.perf_counter()
    try:
        back = MultiLayerNet.load(path, backend="numpy")
    except CheckpointError as exc:
        assert str(path) in str(exc)
    else:  # a change the format does not read (zip metadata, trailing bytes) is harmless
        np.testing.assert_array_equal(back.params.flat, net.params.flat)
    assert time.perf_counter() - start < 5


# -- save → load → identical predictions


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 6), min_size=0, max_size=3), d=st.integers(1, 5),
       c=st.integers(2, 4), bn=st.booleans(), dropout=st.sampled_from([0.0, 0.3]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=seeds,
       act=st.sampled_from(["relu", "sigmoid", "tanh"]))
def test_save_load_identical_predictions(tmp_path, sizes, d, c, bn, dropout, dtype, seed, act):
    net = MultiLayerNet(d, sizes, c, activation=act, batchnorm=bn, dropout=dropout, dtype=dtype,
                        backend="numpy", seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, d)).astype(dtype)
    net.gradient(x, rng.integers(0, c, 4))
    back = MultiLayerNet.load(net.save(tmp_path / "n.npz"), backend="numpy")
    np.testing.assert_array_equal(back.predict(x), net.predict(x))
    np.testing.assert_array_equal(back.predict(x, train=True), net.predict(x, train=True))


# -- optimizer reference functions vs a re-derivation (float64, step by step)

hp = dict(lr=st.floats(1e-4, 1.0), wd=st.sampled_from([0.0, 1e-3, 0.1]), seed=seeds,
          n=st.integers(1, 50), steps=st.integers(1, 6))


def _data(seed, n, steps):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n), [rng.standard_normal(n) for _ in range(steps)]


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@FAST
@given(mu=st.floats(0, 0.99), damp=st.booleans(), **hp)
def test_momentum_matches_rederivation(mu, damp, lr, wd, seed, n, steps):
    p0, gs = _data(seed, n, steps)
    opt = optim.Momentum(lr, mu, dampening=mu if damp else 0.0, weight_decay=wd)
    params = {"w": p0.copy()}
    p, v = p0.copy(), np.zeros(n)
    for g in gs:
        opt.update(params, {"w": g.copy()})
        gg = g + wd * p
        v = mu * v + ((1 - mu) if damp else 1.0) * gg
        p = p - lr * v
    _close(params["w"], p)


@FAST
@given(mu=st.floats(0, 0.99), **hp)
def test_nesterov_matches_rederivation(mu, lr, wd, seed, n, steps):
    # the book's code since 2021, Sutskever's and torch's form: p ← p + μ²·v − (1 + μ)·lr·g
    # with the previous v, then v ← μv − lr·g.
    p0, gs = _data(seed, n, steps)
    opt = optim.Nesterov(lr, mu, weight_decay=wd)
    params = {"w": p0.copy()}
    p, v = p0.copy(), np.zeros(n)
    for g in gs:
        opt.update(params, {"w": g.copy()})
        gg = g + wd * p
        p = p + mu**2 * v - (1 + mu) * lr * gg
        v = mu * v - lr * gg
    _close(params["w"], p)


@FAST
@given(eps=st.floats(1e-10, 1e-2), rho=st.floats(0, 0.999), rms=st.booleans(), **hp)
def test_adagrad_rmsprop_match_rederivation(eps, rho, rms, lr, wd, seed, n, steps):
    p0, gs = _data(seed, n, steps)
    opt = optim.RMSProp(lr, rho, eps, wd) if rms else optim.AdaGrad(lr, eps, wd)
    params = {"w": p0.copy()}
    p, h = p0.copy(), np.zeros(n)
    for g in gs:
        opt.update(params, {"w": g.copy()})
        gg = g + wd * p
        h = rho * h + (1 - rho) * gg**2 if rms else h + gg**2
        p = p - lr * gg / (np.sqrt(h) + eps)
    _close(params["w"], p)


@FAST
@given(b1=st.floats(0, 0.99), b2=st.floats(0, 0.9999), eps=st.floats(1e-10, 1e-3),
       folded=st.booleans(), decoupled=st.booleans(), **hp)
def test_adam_matches_rederivation(b1, b2, eps, folded, decoupled, lr, wd, seed, n, steps):
    p0, gs = _data(seed, n, steps)
    cls = optim.AdamW if decoupled else optim.Adam
    opt = cls(lr, b1, b2, eps, weight_decay=wd, folded=folded)
    params = {"w": p0.copy()}
    p, m, v = p0.copy(), np.zeros(n), np.zeros(n)
    for t, g in enumerate(gs, 1):
        opt.update(params, {"w": g.copy()})
        if decoupled:
            p = p * (1 - lr * wd)
            gg = g
        else:
            gg = g + wd * p
        m = b1 * m + (1 - b1) * gg
        v = b2 * v + (1 - b2) * gg**2
        if folded:  # the book: lr_t = lr·√(1 − β2ᵗ)/(1 − β1ᵗ), ε beside √v
            p = p - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        else:  # torch.optim.Adam: explicit m̂, v̂
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    _close(params["w"], p)


# -- fused kernels vs the xp reference over random sizes, hyperparameters and dtypes

KERNEL_TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}

unit = st.floats(0.0, 0.99)
lrs = st.floats(1e-4, 0.5)
decays = st.sampled_from([0.0, 1e-4, 1e-2])
OPTIMIZER_STRATEGIES = {
    "sgd": st.builds(optim.SGD, lr=lrs, weight_decay=decays),
    "momentum": st.builds(optim.Momentum, lr=lrs, momentum=unit, dampening=unit,
                          weight_decay=decays),
    "nesterov": st.builds(optim.Nesterov, lr=lrs, momentum=unit, weight_decay=decays),
    "adagrad": st.builds(optim.AdaGrad, lr=lrs, eps=st.floats(1e-8, 1e-3),
                         weight_decay=decays),
    "rmsprop": st.builds(optim.RMSProp, lr=lrs, decay_rate=unit, eps=st.floats(1e-8, 1e-3),
                         weight_decay=decays),
    "adam": st.builds(optim.Adam, lr=lrs, beta1=unit, beta2=unit, eps=st.floats(1e-8, 1e-3),
                      weight_decay=decays, folded=st.booleans()),
    "adamw": st.builds(optim.AdamW, lr=lrs, beta1=unit, beta2=unit,
                       weight_decay=st.floats(0, 0.1)),
}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(OPTIMIZER_STRATEGIES)),
       size=st.integers(0, 300), dtype=st.sampled_from([np.float32, np.float64]),
       seed=seeds)
def test_fused_optimizer_matches_reference(data, name, size, dtype, seed):
    from accel import dispatch

    opt = data.draw(OPTIMIZER_STRATEGIES[name])
    twin = type(opt)(**opt.hyperparameters())
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(size).astype(dtype)
    pf, pr = {"w": p0.copy()}, {"w": p0.copy()}
    for _ in range(5):
        g = {"w": rng.standard_normal(size).astype(dtype)}
        opt.update(pf, g)
        with dispatch.use("reference"):
            twin.update(pr, {"w": g["w"].copy()})
    np.testing.assert_allclose(pf["w"], pr["w"], **KERNEL_TOL[dtype])
    for a, b in zip(opt.state["w"], twin.state["w"]):
        np.testing.assert_allclose(a, b, **KERNEL_TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), d=st.integers(1, 40), dtype=st.sampled_from([np.float32,
                                                                         np.float64]),
       momentum=st.floats(0, 0.99), eps=st.floats(1e-6, 1e-2), seed=seeds)
def test_fused_batchnorm_matches_reference(n, d, dtype, momentum, eps, seed):
    from accel import dispatch, functional

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * 2 + 1).astype(dtype)
    dy = rng.standard_normal((n, d)).astype(dtype)
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    stats = [np.zeros(d, dtype), np.ones(d, dtype)]
    ref_stats = [s.copy() for s in stats]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    out, mean, invstd = dispatch.batchnorm_forward_train(x, gamma, beta, *stats, momentum, eps)
    r_out, r_mean, r_invstd = functional.batchnorm_forward_train(x, gamma, beta, *ref_stats,
                                                             momentum, eps)
    for a, b in [(out, r_out), (mean, r_mean), (invstd, r_invstd), *zip(stats, ref_stats)]:
        np.testing.assert_allclose(a, b, **tol)
    fused = bn_backward(dispatch.batchnorm_backward, dy, x, gamma, mean, invstd)
    ref = bn_backward(functional.batchnorm_backward, dy, x, gamma, r_mean, r_invstd)
    for a, b in zip(fused, ref):
        np.testing.assert_allclose(a, b, **tol)
    ev = dispatch.batchnorm_forward_eval(x, gamma, beta, *stats, eps)
    np.testing.assert_allclose(ev, functional.batchnorm_forward_eval(x, gamma, beta, *ref_stats,
                                                                 eps), **tol)


# -- label validation over random label arrays


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(2, 5), data=st.data())
def test_one_hot_labels_are_accepted_exactly_when_they_are_one_hot(n, c, data):
    from accel import checks

    values = st.sampled_from([0.0, 1.0, 0.0, 1.0, 2.0, -1.0, 0.5, float("nan")])
    t = np.array(data.draw(st.lists(st.lists(values, min_size=c, max_size=c), min_size=n,
                                    max_size=n)))
    one_hot = bool(np.isin(t, (0.0, 1.0)).all() and (t.sum(axis=1) == 1).all())
    if one_hot:
        assert checks.labels("t", t, n, c) is t
    else:
        with pytest.raises(ValueError, match="t one-hot rows"):
            checks.labels("t", t, n, c)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-3, 8), min_size=1, max_size=8), c=st.integers(2, 5))
def test_class_ids_are_accepted_exactly_when_in_range(ids, c):
    t = np.array(ids)
    layer = SoftmaxWithLoss()
    x = np.zeros((len(ids), c))
    if all(0 <= i < c for i in ids):
        assert layer.forward(x, t) == pytest.approx(math.log(c))
    else:
        with pytest.raises(ValueError, match="class id"):
            layer.forward(x, t)
