"""Non-finite guard, validated inputs at the public boundaries, determinism, Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from accel import (
    MultiLayerNet,
    Trainer,
    datasets,
    dispatch,
    ewma,
    functional,
    gradcheck,
    layers,
    optim,
    preprocessing,
    schedules,
)
from accel.backend import to_numpy
from accel.trainer import NonFiniteError

ROOT = Path(__file__).parents[1]


def toy(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n)


def _poison(trainer, at, name, value=np.nan):
    """Make the gradient of ``name`` non-finite at the given iterations (1-based)."""
    net = trainer.network
    real = net.loss_and_grads

    def loss_and_grads(x, t):
        loss, grads = real(x, t)
        if trainer.history.iterations + 1 in at:
            grads[name].reshape(-1)[0] = value
        return loss, grads

    net.loss_and_grads = loss_and_grads


# -- non-finite guard


def test_nonfinite_gradient_raises_naming_iteration_and_parameter(backend):
    x, t = toy()
    net = MultiLayerNet(6, [5, 4], 3, batchnorm=True, backend=backend, seed=0)
    tr = Trainer(net, optim.Adam(0.01), x, t, epochs=2, batch_size=8, verbose=False)
    _poison(tr, {7}, "gamma2", np.inf)
    with pytest.raises(NonFiniteError, match=r"iteration 7 \(epoch 2\).*gradient of gamma2") as e:
        tr.fit()
    assert e.value.iteration == 7 and e.value.epoch == 2 and e.value.names == ("gamma2",)
    assert tr.optimizer.t == 6 and tr.history.iterations == 6  # the bad step was not applied
    assert np.isfinite(to_numpy(net.params.flat)).all()
    for bn in net.batchnorm_layers():  # the bad forward pass did not leave NaN behind
        assert np.isfinite(to_numpy(bn.running_mean)).all()


def test_nonfinite_loss_raises(backend):
    x, t = toy()
    net = MultiLayerNet(6, [5], 3, backend=backend, seed=0)
    tr = Trainer(net, optim.SGD(0.1), x, t, epochs=1, batch_size=8, verbose=False)
    net.params["b2"] = np.array([np.nan, 0, 0], dtype=np.float32)
    with pytest.raises(NonFiniteError, match="iteration 1 .*b2"):
        tr.fit()


def test_skip_mode_counts_and_skips_steps(backend):
    x, t = toy()
    ref = MultiLayerNet(6, [5], 3, batchnorm=True, backend=backend, seed=0)
    net = MultiLayerNet(6, [5], 3, batchnorm=True, backend=backend, seed=0)
    tr = Trainer(net, optim.Adam(0.01), x, t, epochs=2, batch_size=8, verbose=False,
                 on_nonfinite="skip")
    _poison(tr, {2, 9}, "W1")
    h = tr.fit()
    assert h.skipped_steps == 2 and h.skipped == [2, 9] and h.iterations == 10
    assert tr.optimizer.t == 8 and np.isfinite(to_numpy(net.params.flat)).all()
    assert not np.array_equal(to_numpy(net.params.flat), to_numpy(ref.params.flat))
    assert h.to_dict()["skipped_steps"] == 2


def test_guard_off_lets_nan_through():
    x, t = toy()
    net = MultiLayerNet(6, [5], 3, backend="numpy", seed=0)
    tr = Trainer(net, optim.SGD(0.1), x, t, epochs=1, batch_size=8, verbose=False,
                 on_nonfinite=None)
    _poison(tr, {1}, "W1")
    tr.fit()
    assert np.isnan(net.params["W1"]).any()


# -- validated inputs: the list, at each public entry point


def _net(**kw):
    return MultiLayerNet(4, [5], 3, backend="numpy", **kw)


BAD = [
    # hyperparameters
    (lambda: optim.SGD(lr=0), ValueError, "lr must be > 0, got 0"),
    (lambda: optim.Adam(lr=-1e-3), ValueError, "lr must be > 0"),
    (lambda: optim.Adam(lr=float("nan")), ValueError, "lr must be > 0"),
    (lambda: optim.Adam(beta1=1.0), ValueError, "beta1 must be in \\[0, 1\\), got 1.0"),
    (lambda: optim.AdamW(beta2=-0.1), ValueError, "beta2"),
    (lambda: optim.Adam(eps=0), ValueError, "eps must be > 0, got 0"),
    (lambda: optim.RMSProp(eps=-1), ValueError, "eps"),
    (lambda: optim.RMSProp(decay_rate=1), ValueError, "decay_rate"),
    (lambda: optim.Momentum(momentum=1.5), ValueError, "momentum"),
    (lambda: optim.SGD(0.1, weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (lambda: optim.Adam(lr="0.1"), TypeError, "lr must be a positive number, got '0.1'"),
    (lambda: _net(dropout=1.0), ValueError, "dropout must be in \\[0, 1\\), got 1.0"),
    (lambda: _net(dropout=-0.1), ValueError, "dropout"),
    (lambda: _net(weight_decay=-0.5), ValueError, "weight_decay must be >= 0, got -0.5"),
    (lambda: _net(batchnorm=True, bn_momentum=1.0), ValueError, "bn_momentum"),
    (lambda: _net(bn_eps=0.0), ValueError, "bn_eps must be > 0"),
    (lambda: _net(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda: layers.BatchNorm(np.ones(3), np.zeros(3), eps=-1), ValueError, "eps"),
    (lambda: layers.Dropout(1.2), ValueError, "ratio"),
    (lambda: schedules.StepDecay(lr0=0), ValueError, "lr0"),
    # trainer settings
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), epochs=0), ValueError, "epochs"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), epochs=-2), ValueError, "epochs"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), batch_size=0), ValueError,
     "batch_size must be > 0, got 0"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), batch_size=2.5), TypeError,
     "batch_size"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), on_nonfinite="warn"), ValueError,
     "on_nonfinite='warn'"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), checkpoint_every=2), ValueError,
     "checkpoint_every=2 needs checkpoint_dir"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), checkpoint_dir=".", checkpoint_every=0),
     ValueError, "checkpoint_every"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), resume="/nonexistent/last.npz"),
     FileNotFoundError, "resume='/nonexistent/last.npz'"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), resume=True), ValueError,
     "resume=True needs checkpoint_dir"),
    (lambda: Trainer(_net(), "adam", *toy(d=4)), TypeError, "optimizer must have an update"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), schedule=0.1), TypeError, "schedule"),
    # data: shapes, dtypes, label ranges, empty batches, BatchNorm with one sample
    (lambda: _net().predict(np.zeros((2, 5), np.float32)), ValueError, "4 features"),
    (lambda: _net().predict(np.zeros((0, 4), np.float32)), ValueError, "x is empty"),
    (lambda: _net().predict(np.zeros((2, 4), np.uint8)), TypeError, "uint8"),
    (lambda: _net().loss(np.zeros((2, 4)), [0, 3]), ValueError, "class id 3, outside \\[0, 3\\)"),
    (lambda: _net().loss(np.zeros((2, 4)), [0.0, 1.0]), TypeError, "must be integers"),
    (lambda: _net().loss(np.zeros((2, 4)), np.zeros((2, 4))), ValueError, "one-hot of shape"),
    (lambda: _net().accuracy(np.zeros((2, 4)), [0, 1], batch_size=0), ValueError, "batch_size"),
    (lambda: _net(batchnorm=True).gradient(np.zeros((1, 4)), [0]), ValueError, "at least 2"),
    (lambda: Trainer(_net(), optim.SGD(0.1), np.zeros((3, 4)), [0, 1]), ValueError, "shape"),
    # one-hot labels: only 0 and 1, one 1 per row
    (lambda: _net().loss(np.zeros((2, 4)), np.array([[1, 0, 0], [0, np.nan, 1]])), ValueError,
     "only 0 and 1"),
    (lambda: _net().loss(np.zeros((2, 4)), np.array([[2.0, 0, 0], [0, 0, 1]])), ValueError,
     "only 0 and 1"),
    (lambda: _net().loss(np.zeros((2, 4)), np.array([[1.0, 1, 0], [0, 0, 1]])), ValueError,
     "exactly one 1"),
    # the layers themselves
    (lambda: layers.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, -1])), ValueError,
     "class id -1"),
    (lambda: layers.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 1, 2])),
     ValueError, "shape \\(2,\\)"),
    (lambda: layers.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0]), check=False),
     ValueError, "2 labels"),
    (lambda: layers.BatchNorm(np.ones(3), np.zeros(3)).forward(np.ones((4, 3), np.int64), True),
     TypeError, "x must be a float array, got int64"),
    (lambda: layers.Affine(np.ones((3, 2)), np.zeros(2)).forward(np.ones((4, 3), np.int32)),
     TypeError, "x must be a float array"),
    # networks and trainers that could not train
    (lambda: MultiLayerNet(4, None, 3), TypeError, "hidden_sizes must be an int or a list"),
    (lambda: MultiLayerNet(4, 2.5, 3), TypeError, "hidden_sizes"),
    (lambda: MultiLayerNet(4, "100", 3), TypeError, "hidden_sizes"),
    (lambda: _net(batchnorm="yes"), TypeError, "batchnorm must be True or False"),
    (lambda: _net(bn_running_var_init=-1.0), ValueError, "bn_running_var_init"),
    (lambda: Trainer(_net(batchnorm=True), optim.SGD(0.1), np.zeros((1, 4)), [0]), ValueError,
     "at least 2 samples"),
    (lambda: Trainer(_net(batchnorm=True), optim.SGD(0.1), *toy(d=4), batch_size=1),
     ValueError, "batch_size=1"),
    (lambda: Trainer(_net(), optim.SGD(0.1), *toy(d=4), record_loss="after"), ValueError,
     "record_loss"),
    # gradient checking
    (lambda: gradcheck.numerical_gradient(lambda: 0.0, np.zeros(3), h=0), ValueError,
     "h must be > 0"),
    (lambda: gradcheck.numerical_gradient(lambda: 0.0, np.zeros(3), h=float("nan")), ValueError,
     "h must be > 0"),
    (lambda: gradcheck.numerical_gradient(lambda: 0.0, np.zeros(3, np.int64)), TypeError,
     "float array"),
    (lambda: gradcheck.relative_difference(np.ones(3), np.ones(1)), ValueError, "same shape"),
    (lambda: gradcheck.check_network(_net(dtype=np.float64), *toy(d=4), h=-1e-5), ValueError,
     "h must be > 0"),
]


@pytest.mark.parametrize("make, exc, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_names_the_argument_and_value(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# -- determinism


_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from accel import MultiLayerNet, Trainer, optim

    mode, out = sys.argv[1], sys.argv[2]
    # Ctrl-C as at a terminal: a process started in the background inherits SIGINT ignored,
    # and the trainer (rightly) leaves an ignored SIGINT alone
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    t = rng.integers(0, 3, 64)
    net = MultiLayerNet(6, [16, 16], 3, batchnorm=True, dropout=0.1, backend="numpy", seed=5)
    tr = Trainer(net, optim.Adam(1e-2), x, t, epochs=3, batch_size=10, seed=7,
                 verbose=False, checkpoint_dir=out if mode == "interrupt" else None)
    if mode == "interrupt":
        real = tr.step
        def step(x, t):
            ok = real(x, t)
            if tr.history.iterations == 10:
                os.kill(os.getpid(), signal.SIGINT)   # a real Ctrl-C, mid-epoch
            return ok
        tr.step = step
    tr.fit()
    np.save(os.path.join(out, "params.npy"), net.params.flat)
""")


def _run(mode, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="random")
    return subprocess.run([sys.executable, "-c", _SCRIPT, mode, str(out)], env=env,
                          capture_output=True, text=True, timeout=120)


def _same_run_here(resume=None, out=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    t = rng.integers(0, 3, 64)
    net = MultiLayerNet(6, [16, 16], 3, batchnorm=True, dropout=0.1, backend="numpy", seed=5)
    Trainer(net, optim.Adam(1e-2), x, t, epochs=3, batch_size=10, seed=7, verbose=False,
            resume=resume).fit()
    return net.params.flat


def test_same_seed_same_result_across_processes(tmp_path):
    proc = _run("plain", tmp_path)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "params.npy"), _same_run_here())


def test_ctrl_c_in_a_real_process_writes_a_checkpoint_that_resumes_exactly(tmp_path):
    proc = _run("interrupt", tmp_path)
    # the interrupt propagates as a KeyboardInterrupt: the process ends as Ctrl-C ends it
    assert proc.returncode in (-signal.SIGINT, 130, 1), proc.stderr
    assert "TrainingInterrupted" in proc.stderr
    path = tmp_path / "last.npz"
    assert f"checkpoint written to {path}" in proc.stderr
    assert not (tmp_path / "params.npy").exists()  # code after fit() did not run
    np.testing.assert_array_equal(_same_run_here(resume=path), _same_run_here())


@pytest.mark.parametrize("mode", ["fused", "reference"])
def test_both_paths_refuse_the_same_input(mode):
    p = np.ones(5, np.float32)
    x, d3 = np.ones((4, 3)), np.ones(3)
    with dispatch.use(mode):
        with pytest.raises(TypeError, match="state\\[0\\] has dtype float64"):
            dispatch.optimizer_step(functional.adagrad, p, p.copy(), (np.zeros(5),),
                                    (0.1, 1e-7, 0.0, 0))
        with pytest.raises(ValueError, match="g has shape"):
            dispatch.optimizer_step(functional.sgd, p, np.ones(4, np.float32), (), (0.1, 0.0, 0))
        with pytest.raises(ValueError, match="gamma has shape"):
            dispatch.batchnorm_forward_train(x, np.ones(2), d3, d3 * 0, d3, 0.9, 1e-5)
        with pytest.raises(TypeError, match="x must be a float array"):
            dispatch.batchnorm_forward_eval(x.astype(int), d3, d3, d3, d3, 1e-5)
    np.testing.assert_array_equal(p, np.ones(5))


@pytest.mark.parametrize("make, name", [
    (lambda: optim.Adam(folded="no"), "folded"),
    (lambda: layers.Dropout(0.5, inverted="no"), "inverted"),
    (lambda: MultiLayerNet(4, [5], 3, dropout_inverted=0), "dropout_inverted"),
    (lambda: datasets.load("moons", one_hot="yes"), "one_hot"),
    (lambda: preprocessing.PCAWhitening(zca=1), "zca"),
    (lambda: ewma.EWMA(0.9, bias_correction="no"), "bias_correction"),
])
def test_flags_are_true_or_false_not_anything_truthy(make, name):
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        make()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_an_update_that_overflows_the_parameters_is_named(mode):
    """Adam at lr 1e38: the first update itself makes parameters Inf. The next step's guard
    catches it and the error names those parameters, in either mode (skipping cannot bring
    them back); never trained on silently. The same on NumPy and on the counting backend
    (which stands for a GPU: decided on the device)."""
    from accel import opcount

    x, t = toy()
    runs = {}
    for name, backend in (("numpy", "numpy"), ("device", opcount.backend())):
        net = MultiLayerNet(6, [5], 3, backend=backend, seed=0)
        tr = Trainer(net, optim.Adam(1e38), x, t, epochs=2, batch_size=8, verbose=False,
                     on_nonfinite=mode, seed=0)
        with pytest.raises(NonFiniteError, match=r"iteration 2 \(epoch 1\).*parameters") as e:
            tr.fit()
        runs[name] = (e.value, to_numpy(net.params.flat), tr.history.iterations, tr.optimizer.t)
    (err, params, iterations, t_opt), (err_d, params_d, iterations_d, t_d) = runs.values()
    assert err.iteration == err_d.iteration == 2 and err.names == err_d.names
    assert set(err.names) >= {"W1"} and iterations == iterations_d == 1 and t_opt == t_d == 1
    np.testing.assert_array_equal(params, params_d)
    assert not np.isfinite(params).all()  # what the first update made of them


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_the_guard_decides_the_same_on_numpy_and_on_a_device(mode):
    """A NaN gradient at iteration 7: the same iteration named, the same parameters, the same
    skipped list, on NumPy and on the counting backend."""
    from accel import opcount

    x, t = toy()
    out = []
    for backend in ("numpy", opcount.backend()):
        net = MultiLayerNet(6, [5, 4], 3, batchnorm=True, backend=backend, seed=0)
        tr = Trainer(net, optim.Adam(0.01), x, t, epochs=3, batch_size=8, verbose=False,
                     on_nonfinite=mode, seed=0)
        _poison(tr, {7}, "W2")
        try:
            tr.fit()
            raised = None
        except NonFiniteError as e:
            raised = (e.iteration, e.names)
        out.append((raised, to_numpy(net.params.flat), to_numpy(net.buffers.flat),
                    tr.history.skipped, tr.optimizer.t, tr.history.iterations))
    (r1, p1, b1, s1, t1, i1), (r2, p2, b2, s2, t2, i2) = out
    assert r1 == r2 and s1 == s2 and t1 == t2 and i1 == i2
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(b1, b2)
    if mode == "raise":
        assert r1 == (7, ("W2",)) and t1 == 6 and i1 == 6
    else:
        assert r1 is None and s1 == [7] and t1 == 14 and i1 == 15
