"""A call site's plan: after its first call a CPU plan calls the compiled kernel directly,
so what the plan lets through must be exactly what that compile takes."""

import numpy as np
import pytest
from accel.kernels import guard_record as R

from accel import MultiLayerNet, dispatch, optim
from accel import functional as F


@pytest.fixture(autouse=True)
def _fused():
    with dispatch.use("fused"):
        yield


def _pair(rng, n=5, d=7, dtype=np.float32):
    return rng.standard_normal((n, d)).astype(dtype), rng.standard_normal(d).astype(dtype)


def test_a_site_calls_the_compiled_kernel_directly_with_the_same_results():
    rng = np.random.default_rng(0)
    site = dispatch.Site(F.scaled_add)
    for step in range(4):
        y, x = rng.standard_normal(33).astype(np.float32), rng.standard_normal(33)
        x = x.astype(np.float32)
        want = y.copy()
        F.scaled_add(want, x, 0.25 * step)
        site(y, x, scalars=(0.25 * step,))  # a Python float, then ints: converted alike
        np.testing.assert_array_equal(y, want)
    assert site.plan.entry  # the compiled function, found at the second call
    dispatch.reset_calls()
    site(y, x, scalars=(1,))
    assert dispatch.calls() == {("scaled_add", "cpu"): 1}


def test_a_read_only_array_in_place_of_a_written_one_is_refused_not_written():
    rng = np.random.default_rng(1)
    site = dispatch.Site(F.bias_activation)
    y, b = _pair(rng)
    site(y, b, scalars=(F.RELU,))
    frozen = y.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        site(frozen, b, scalars=(F.RELU,))
    np.testing.assert_array_equal(frozen, y)


def _strided(y):
    wide = np.zeros((y.shape[0], 2 * y.shape[1]), y.dtype)
    wide[:, ::2] = y
    return wide[:, ::2]


def _unaligned(y):
    raw = bytearray(1 + y.nbytes)  # writable, one byte past an aligned start
    out = np.frombuffer(raw, y.dtype, offset=1).reshape(y.shape)
    out[...] = y
    return out


@pytest.mark.parametrize("make", [_strided, _unaligned])
def test_arrays_of_another_layout_do_not_take_the_direct_call(make):
    rng = np.random.default_rng(2)
    site = dispatch.Site(F.bias_activation)
    y, b = _pair(rng)
    site(y.copy(), b, scalars=(F.TANH,))
    site(y.copy(), b, scalars=(F.TANH,))  # the direct call is in use
    other = make(y)
    assert other.flags.writeable and other.shape == y.shape
    want = y.copy()
    F.bias_activation(want, b, F.TANH)
    site(other, b, scalars=(F.TANH,))
    np.testing.assert_allclose(other, want, rtol=1e-6)


def test_a_one_off_call_does_not_look_for_the_compiled_function():
    y, x = np.ones(9, np.float32), np.ones(9, np.float32)
    plan = dispatch.Plan(F.scaled_add, (y, x))
    plan(y, x, scalars=(2.0,))
    assert plan.entry == () and y[0] == 3  # one call: the dispatcher, nothing looked up
    plan(y, x, scalars=(2.0,))
    assert plan.entry and y[0] == 5


def test_a_record_of_another_dtype_takes_the_dispatcher_and_is_not_learnt():
    rng = np.random.default_rng(3)
    p, g, m, v = (rng.standard_normal(20).astype(np.float32) for _ in range(4))
    clip = F.clip_array(p)
    site = dispatch.Site(F.adam)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 1, False, 0.0, 1.0, 0)
    good = np.zeros(R.FLAGS, np.int64)
    site(p, g, m, v, clip, scalars=scalars, record=good)
    site(p, g, m, v, clip, scalars=scalars, record=good)
    entry = site.plan.entry
    assert entry
    odd = np.zeros(R.FLAGS, np.float64)
    odd[R.SKIP] = 1
    before = p.copy()
    site(p, g, m, v, clip, scalars=scalars, record=odd)  # skip: nothing changes
    np.testing.assert_array_equal(p, before)
    assert site.plan.entry is entry and site.plan.checked_record is good
    site(p, g, m, v, clip, scalars=scalars, record=good)
    assert not np.array_equal(p, before)


def test_an_optimizer_remembers_a_networks_pair_until_the_mask_changes():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)
    net = MultiLayerNet(5, [4], 3, seed=0)
    opt = optim.SGD(lr=0.1, weight_decay=0.5)
    grads = net.gradient(x, t)
    opt.update(net.params, grads)
    assert opt._pairs(net.params, grads)[0][3] == net.params.n_weights
    b1 = net.params["b1"].copy()
    grads.flat[...] = 0  # only weight decay moves a parameter now
    opt.decay_mask = "all"
    opt.update(net.params, grads)
    np.testing.assert_allclose(net.params["b1"], b1 * (1 - 0.1 * 0.5), rtol=1e-6)
