"""Trainer: epochs, batches, schedule, history, progress; learning on real data."""

import io

import numpy as np
import pytest

from accel import MultiLayerNet, Trainer, datasets, optim, schedules
from accel.backend import to_numpy
from accel.preprocessing import minibatches


def toy(n=10, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n)


def test_history_partial_batch_and_evaluations(backend):
    x, t = toy(n=10)
    net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
    h = Trainer(net, optim.SGD(0.1), x, t, x, t, epochs=2, batch_size=4, seed=0,
                verbose=False).fit()
    assert h.iterations == 6  # 4 + 4 + 2 per epoch
    assert len(h.train_loss) == 6 and all(np.isfinite(h.train_loss))
    assert h.epoch == [0, 1, 2] and len(h.train_acc) == 3 and len(h.test_acc) == 3
    assert h.train_acc == h.test_acc  # same data for both
    assert h.to_dict()["iterations"] == 6


def test_same_seed_same_batches_same_result(backend):
    x, t = toy(n=50)
    results = []
    for seed in (1, 1, 2):
        net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
        Trainer(net, optim.SGD(0.1), x, t, epochs=2, batch_size=8, seed=seed,
                verbose=False).fit()
        results.append(to_numpy(net.params.flat))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_max_iterations_and_schedule(backend):
    x, t = toy(n=40)
    net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
    opt = optim.SGD(1.0)
    h = Trainer(net, opt, x, t, epochs=10, batch_size=10, max_iterations=9, verbose=False,
                schedule=schedules.InverseTimeDecay(0.1, rate=1.0)).fit()
    assert h.iterations == 9
    assert h.epoch == [0, 1, 2, 2.25]
    assert h.lr == pytest.approx([0.1, 0.1, 0.05, 0.1 / 3])


def test_evaluate_every(backend, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    x, t = toy(n=20)
    net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
    h = Trainer(net, optim.SGD(0.1), x, t, x, t, epochs=7, batch_size=5,
                evaluate_every=3).fit()
    assert h.epoch == [0, 3, 6, 7]  # every third epoch and the last
    assert len(h.train_loss) == 28 and len(h.test_acc) == 4
    assert len(buf.getvalue().splitlines()) == 3  # one plain line per evaluation
    with pytest.raises(ValueError, match="evaluate_every"):
        Trainer(net, optim.SGD(0.1), x, t, evaluate_every=0)


class Recording(Trainer):
    """A Trainer that keeps the labels of every mini-batch it steps on."""

    def step(self, x, t):
        self.seen = getattr(self, "seen", []) + [to_numpy(t).tolist()]
        return super().step(x, t)


def test_trainer_batches_are_preprocessing_minibatches(backend):
    """One implementation: the Trainer's first epoch is minibatches(x, t, b, seed)."""
    x, t = toy(n=10)
    t = np.arange(10)  # labels that name the sample
    net = MultiLayerNet(4, [5], 10, backend=backend, seed=0)
    tr = Recording(net, optim.SGD(0.1), x, t, epochs=2, batch_size=4, seed=7, verbose=False)
    tr.fit()
    first = [to_numpy(tb).tolist() for _, tb in minibatches(x, t, 4, seed=7)]
    assert tr.seen[:3] == first and [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(tr.seen[3:], [])) == list(range(10)) and tr.seen[3:] != first


@pytest.mark.parametrize("n, batch_size, per_epoch", [(5, 2, 2), (9, 4, 2), (10, 4, 3)])
def test_batchnorm_merges_a_last_batch_of_one(backend, n, batch_size, per_epoch):
    """A BatchNorm net cannot train on one sample: that last batch joins the one before,
    so every sample is still seen each epoch, and iterations_per_epoch() says so."""
    x, _ = toy(n=n)
    t = np.arange(n) % 3
    net = MultiLayerNet(4, [5], 3, batchnorm=True, backend=backend, seed=0)
    tr = Recording(net, optim.SGD(0.1), x, t, epochs=3, batch_size=batch_size, seed=1,
                   verbose=False)
    assert tr.iterations_per_epoch() == per_epoch
    h = tr.fit()
    assert h.iterations == 3 * per_epoch == len(tr.seen)
    assert min(len(b) for b in tr.seen) >= 2
    assert sum(len(b) for b in tr.seen) == 3 * n  # nothing dropped
    expected = minibatches(x, t, batch_size, seed=1, min_last=2)
    assert tr.seen[:per_epoch] == [to_numpy(tb).tolist() for _, tb in expected]
    plain = Trainer(MultiLayerNet(4, [5], 3, backend=backend, seed=0), optim.SGD(0.1), x, t,
                    batch_size=batch_size)
    assert plain.iterations_per_epoch() == -(-n // batch_size)  # no BatchNorm: no merge


def test_plain_progress_lines_when_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    x, t = toy(n=20)
    net = MultiLayerNet(4, [5], 3, backend="numpy", seed=0)
    Trainer(net, optim.SGD(0.1), x, t, x, t, epochs=3, batch_size=5).fit()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in buf.getvalue()
    assert lines[0].startswith("epoch 1/3") and "test_acc" in lines[0] and "loss" in lines[0]


def test_on_a_terminal_each_evaluation_is_a_whole_line_after_the_bar(monkeypatch):
    """The bar's postfix was cut at the terminal's width (110 columns): the numbers now
    come as their own line once the epoch's bar is gone."""
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    monkeypatch.setattr("accel.trainer._interactive", lambda: True)
    monkeypatch.setenv("COLUMNS", "110")
    x, t = toy(n=20)
    net = MultiLayerNet(4, [5], 3, backend="numpy", seed=0)
    Trainer(net, optim.SGD(0.1), x, t, x, t, validation_data=(x, t), epochs=2,
            batch_size=5).fit()
    lines = [seg for line in buf.getvalue().splitlines() for seg in line.split("\r")]
    summaries = [seg for seg in lines if seg.startswith("epoch ") and "  loss " in seg]
    assert len(summaries) == 2
    for line in summaries:
        assert all(k in line for k in ("train_acc", "val_acc", "test_acc", " lr 0.1  ("))
        assert line.rstrip().endswith("s)") and len(line) <= 110
    assert not any("|" in seg and "test_acc" in seg for seg in lines)  # not in a bar


def test_bad_trainer_arguments():
    x, t = toy()
    net = MultiLayerNet(4, [5], 3, backend="numpy")
    for kwargs, match in [(dict(epochs=0), "epochs"), (dict(batch_size=-1), "batch_size"),
                          (dict(max_iterations=0), "max_iterations")]:
        with pytest.raises(ValueError, match=match):
            Trainer(net, optim.SGD(0.1), x, t, **kwargs)
    with pytest.raises(ValueError, match="together"):
        Trainer(net, optim.SGD(0.1), x, t, x_test=x)
    with pytest.raises(ValueError, match="class id 7"):
        Trainer(net, optim.SGD(0.1), x, np.full(10, 7))


def test_moons_is_learned(backend):
    (x, t), (xt, tt) = datasets.load("moons", n_samples=600, noise=0.1, seed=0)
    net = MultiLayerNet(2, [16, 16], 2, backend=backend, seed=0)
    h = Trainer(net, optim.Adam(0.01), x, t, xt, tt, epochs=30, batch_size=32, seed=0,
                verbose=False).fit()
    assert h.test_acc[-1] >= 0.95
    assert np.mean(h.train_loss[-10:]) < 0.5 * np.mean(h.train_loss[:10])


def test_fashion_mnist_one_epoch_reaches_80_percent(backend, data_dir):
    """784-100×4-10 ReLU He, Adam 1e-3, batch 128, one epoch (PyTorch: 0.83–0.85)."""
    (x, t), (xt, tt) = datasets.load("fashion-mnist", data_dir=data_dir, download=False)
    net = MultiLayerNet(784, [100] * 4, 10, activation="relu", weight_init="he",
                        backend=backend, seed=0)
    h = Trainer(net, optim.Adam(1e-3), x, t, xt, tt, epochs=1, batch_size=128, seed=0,
                verbose=False).fit()
    assert h.iterations == 469
    assert h.test_acc[0] < 0.3  # it learned, not started there
    assert h.test_acc[-1] >= 0.80, h.test_acc


def test_record_loss_before_or_after_the_update(backend):
    """One batch per epoch: the recorded loss is that batch's loss before the step (default),
    or, as the book's trainer records it, the eval-mode loss after the step."""
    x, t = toy(n=16)
    losses = {}
    for when in ("before_update", "after_update"):
        net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
        start = net.loss(x, t)
        h = Trainer(net, optim.SGD(0.5), x, t, epochs=3, batch_size=16, seed=0, verbose=False,
                    record_loss=when).fit()
        losses[when] = h.train_loss
        if when == "before_update":
            assert h.train_loss[0] == pytest.approx(start, rel=1e-6)
        else:
            assert h.train_loss[-1] == pytest.approx(net.loss(x, t), rel=1e-6)
    # the same run, the curves shifted by one update
    assert losses["after_update"][:2] == pytest.approx(losses["before_update"][1:], rel=1e-5)


def test_blas_threads_make_results_independent_of_the_thread_count(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys, numpy as np, accel
        from accel import MultiLayerNet, optim
        rng = np.random.default_rng(0)
        x = rng.standard_normal((128, 784)).astype(np.float32); t = rng.integers(0, 10, 128)
        net = MultiLayerNet(784, [100] * 4, 10, seed=0, backend="numpy")
        opt = optim.Adam(1e-3)
        x, t = net.prepare(x, t)
        with accel.blas_threads(1):
            for _ in range(4):
                opt.update(net.params, net.loss_and_grads(x, t)[1])
        np.save(sys.argv[1], net.params.flat)
    """)
    for n in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n))
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{n}.npy")], env=env,
                       check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))
