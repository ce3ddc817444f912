"""accel.opcount: what counts as one array operation, and the counts of a training step."""

import numpy as np
import pytest
from conftest import assert_close

import accel
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
    assert count.ops["kernel adam"] == 1 and count.ops["dot"] == 14
    with dispatch.use("reference"):  # every op an xp call: the readable ground truth
        ref = opcount.training_step(net, opt, x, t)
    assert ref.total > 2 * count.total
    assert ref.by_scope["optimizer"] > 1 and "kernel adam" not in ref.ops


def test_gradient_clipping_adds_one_operation():
    """clip_norm: one fused reduction over the flat gradient buffer writes the factor the
    update kernel reads; weight decay on the weight block costs nothing more."""
    x, t = _data()
    net = _mlp(False, opcount.backend())
    opt = optim.AdamW(clip_norm=1.0, weight_decay=0.01)
    opcount.training_step(net, opt, x, t)
    count = opcount.training_step(net, opt, x, t)
    assert count.by_scope["optimizer"] == 2 and count.total == 28
    assert count.ops["kernel clip_factor"] == 1 and count.ops["kernel adam"] == 1


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


# -- the counting backend is as strict as CuPy, and every Trainer/network option runs on it


def test_refuses_what_cupy_refuses(xp):
    a = xp.ones(3)
    for bad in (lambda: a + np.ones(3), lambda: np.add(a, [1.0, 2.0, 3.0]),
                lambda: xp.stack([a, 1.0]), lambda: xp.stack([1.0, 2.0]),
                lambda: xp.concatenate([a, np.ones(2)]), lambda: xp.asarray([a[0], a[1]]),
                lambda: np.maximum(a, np.zeros(3), out=a)):
        with pytest.raises(TypeError):
            bad()
    # what CuPy takes: Python and NumPy scalars, uploads, device arrays stacked
    assert float((a * 2.0 + np.float32(1))[0]) == 3.0
    assert xp.stack([a, a]).shape == (2, 3) and xp.asarray([1.0, 2.0]).shape == (2,)


def test_host_reads_are_counted(xp):
    a = xp.arange(4.0)
    with opcount.Count() as c:
        float(a[1]), bool(a[0] == 0), a[2].item(), a.tolist(), f"{a[3]:.2f}"
        accel.to_numpy(a)
    assert dict(c.host_reads) == {"float": 1, "bool": 1, "item": 1, "tolist": 1, "format": 1,
                                  "get": 1}


def _options():
    rng = np.random.default_rng(0)
    x_val, t_val = rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 3, 10)
    yield "plain", {}, {}
    yield "record_loss after_update", {}, dict(record_loss="after_update")
    yield "batchnorm", dict(batchnorm=True), {}
    yield "batchnorm torch start", dict(batchnorm=True, bn_running_var_init=0.0), {}
    yield "dropout", dict(dropout=0.3), {}
    yield "dropout book", dict(dropout=0.3, dropout_inverted=False), {}
    yield "weight decay", dict(weight_decay=1e-3), {}
    yield "sigmoid xavier", dict(activation="sigmoid", weight_init="xavier"), {}
    yield "tanh float64", dict(activation="tanh", dtype=np.float64), {}
    yield "schedule", {}, dict(schedule=accel.schedules.ExponentialDecay(1e-2))
    yield "schedule per iteration", {}, dict(schedule=accel.schedules.InverseSqrtDecay(1e-2),
                                             schedule_unit="iteration")
    yield "early stopping", {}, dict(validation_data=(x_val, t_val), early_stopping=True)
    yield "sigmoid output", dict(output="sigmoid"), {}
    yield "evaluate_sample", {}, dict(evaluate_sample=5, evaluate_every=2)
    yield "validation", {}, dict(validation_data=(x_val, t_val))
    yield "one-hot labels", {}, dict(one_hot=True)
    yield "max_iterations", {}, dict(max_iterations=7)
    yield "skip non-finite", {}, dict(on_nonfinite="skip")
    yield "no guard", {}, dict(on_nonfinite=None)
    yield "verbose", {}, dict(verbose=True)
    yield "checkpoints", {}, dict(checkpoint_dir=True)
    for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "AdamW"):
        yield name, {}, dict(optimizer=name)
    yield "clip_norm", {}, dict(optimizer_kw=dict(clip_norm=0.1))
    yield "AdamW decay mask clip_norm", {}, dict(optimizer="AdamW", optimizer_kw=dict(
        decay_mask=["b1", "W2"], clip_norm=0.1))
    yield "weight decay all", dict(weight_decay=1e-2, decay_mask="all"), dict(
        optimizer="SGD", optimizer_kw=dict(weight_decay=1e-2, decay_mask="all"))


OPTIONS = {name: (net_kw, trainer_kw) for name, net_kw, trainer_kw in _options()}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_trainer_and_network_option_runs_on_the_counting_backend(option, tmp_path):
    """Each option's fit() on the strict counting backend (a stand-in for CuPy) gives the
    bits the same run gives on NumPy."""
    net_kw, trainer_kw = OPTIONS[option]
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((40, 6)).astype(np.float32), rng.integers(0, 3, 40)
    x_test, t_test = rng.standard_normal((12, 6)).astype(np.float32), rng.integers(0, 3, 12)

    def fit(backend, folder):
        kw = dict(trainer_kw)
        opt = getattr(optim, kw.pop("optimizer", "Adam"))(lr=1e-2, **kw.pop("optimizer_kw", {}))
        labels = np.eye(3, dtype=np.float32)[t] if kw.pop("one_hot", False) else t
        if kw.get("checkpoint_dir"):
            kw["checkpoint_dir"] = folder
        if kw.pop("early_stopping", False):  # a fresh one per run: it keeps state
            kw["on_evaluate"] = [accel.EarlyStopping(patience=1)]
        binary = net_kw.get("output") == "sigmoid"  # one unit, labels 0/1
        net = MultiLayerNet(6, [5, 4], 1 if binary else 3, backend=backend, seed=0, **net_kw)
        trainer = accel.Trainer(net, opt, x, labels % 2 if binary else labels, x_test,
                                t_test % 2 if binary else t_test,
                                **{"epochs": 3, "batch_size": 8, "seed": 0, "verbose": False,
                                   **kw})
        history = trainer.fit()
        return net, history

    counted, h_counted = fit(opcount.backend(), tmp_path / "counted")
    plain, h_plain = fit("numpy", tmp_path / "plain")
    np.testing.assert_array_equal(accel.to_numpy(counted.params.flat), plain.params.flat)
    np.testing.assert_array_equal(accel.to_numpy(counted.buffers.flat), plain.buffers.flat)
    assert h_counted.train_loss == h_plain.train_loss
    assert h_counted.test_acc == h_plain.test_acc and h_counted.iterations == h_plain.iterations
    if trainer_kw.get("checkpoint_dir"):  # the counted run's checkpoint resumes on NumPy
        resumed = MultiLayerNet.load(tmp_path / "counted" / "last.npz", backend="numpy")
        np.testing.assert_array_equal(resumed.params.flat, plain.params.flat)


# -- a training step reads nothing back from the device


@pytest.mark.parametrize("opt_kw", [{}, dict(clip_norm=0.5, weight_decay=1e-3)],
                         ids=["", "clip_norm"])
@pytest.mark.parametrize("net_kw", [{}, dict(batchnorm=True, dropout=0.2)],
                         ids=["plain", "batchnorm+dropout"])
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_training_step_reads_nothing_from_the_device(net_kw, mode, opt_kw):
    """Counted on the counting backend (a stand-in for a GPU): no float/bool/item/format of a
    device array and no conversion to NumPy inside Trainer.step, and a whole fit() reads the
    device as often with 4 steps an epoch as with 16 (at the epoch's end, not per step).
    Gradient-norm clipping decides its factor on the device too."""
    rng = np.random.default_rng(0)

    def reads(batch_size):
        x, t = rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 3, 64)
        net = MultiLayerNet(6, [5, 4], 3, backend=opcount.backend(), seed=0, **net_kw)
        trainer = accel.Trainer(net, optim.Adam(lr=1e-2, **opt_kw), x, t, x[:8], t[:8], epochs=2,
                                batch_size=batch_size, seed=0, verbose=False,
                                on_nonfinite=mode)
        step, in_steps = trainer.step, opcount.Count()

        def counted_step(x, t):
            with in_steps:
                return step(x, t)

        trainer.step = counted_step
        with opcount.Count() as whole:
            trainer.fit()
        assert trainer.history.iterations == 2 * 64 // batch_size
        assert in_steps.total > 0 and sum(in_steps.host_reads.values()) == 0, \
            dict(in_steps.host_reads)
        return whole.host_reads

    assert reads(16) == reads(4)
