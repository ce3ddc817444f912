"""Course 2's training controls in the Trainer: early stopping (restores the best parameters
and BatchNorm statistics, survives a resume), on_evaluate lists, per-iteration lr decay."""

import numpy as np
import pytest

import accel
from accel import EarlyStopping, MultiLayerNet, Trainer, optim, schedules
from accel.backend import to_numpy


def toy(n=40, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n)


# A validation accuracy per epoch, written over the measured one by a hook placed before
# EarlyStopping: the stopping epoch is then known in advance. Best at epoch 2; with
# patience 3 the run stops at epoch 5 (0.65, 0.70 = the best, not better, 0.69).
SCRIPT = [0.5, 0.6, 0.7, 0.65, 0.7, 0.69, 0.9, 0.95, 0.97, 0.98, 0.99]


def scripted(trainer):
    trainer.history.val_acc[-1] = SCRIPT[int(trainer.history.epoch[-1])]


class Snapshots:
    """Copies of the parameters and BatchNorm statistics at every evaluation."""

    def __init__(self):
        self.params, self.buffers = {}, {}

    def __call__(self, trainer):
        e = trainer.history.epoch[-1]
        self.params[e] = to_numpy(trainer.network.params.flat).copy()
        self.buffers[e] = to_numpy(trainer.network.buffers.flat).copy()


def bn_trainer(backend, stopper, *, epochs=10, extra=(), **kwargs):
    x, t = toy()
    net = MultiLayerNet(4, [6, 5], 3, batchnorm=True, backend=backend, seed=0)
    return Trainer(net, optim.SGD(0.1), x, t, validation_data=(x, t), epochs=epochs,
                   batch_size=8, seed=0, verbose=False,
                   on_evaluate=[scripted, *extra, stopper], **kwargs)


def test_early_stopping_stops_and_restores_the_best_parameters_and_bn_statistics(backend):
    snaps = Snapshots()
    stop = EarlyStopping(metric="val_acc", patience=3)
    tr = bn_trainer(backend, stop, extra=[snaps])
    h = tr.fit()  # no exception escapes
    assert h.epoch == [0, 1, 2, 3, 4, 5] and h.iterations == 5 * 5
    assert h.stopped_epoch == 5 and "val_acc" in h.stop_reason and "epoch 2" in h.stop_reason
    assert (stop.best, stop.best_epoch, stop.wait) == (0.7, 2, 3)
    net = tr.network
    np.testing.assert_array_equal(to_numpy(net.params.flat), snaps.params[2])
    np.testing.assert_array_equal(to_numpy(net.buffers.flat), snaps.buffers[2])
    assert not np.array_equal(snaps.params[5], snaps.params[2])  # it did move on
    assert not np.array_equal(snaps.buffers[5], snaps.buffers[2])
    # a stopped run stays stopped: fit() again trains no further
    tr.epochs = 20
    assert tr.fit().iterations == 25


def test_early_stopping_min_delta_and_no_restore(backend):
    # with min_delta 0.25 nothing beats the first 0.5 by enough: the run stops at epoch 3
    snaps = Snapshots()
    stop = EarlyStopping(patience=3, min_delta=0.25, restore_best=False)
    tr = bn_trainer(backend, stop, extra=[snaps])
    h = tr.fit()
    assert h.stopped_epoch == 3 and (stop.best, stop.best_epoch) == (0.5, 0)
    np.testing.assert_array_equal(to_numpy(tr.network.params.flat), snaps.params[3])  # kept
    with pytest.raises(RuntimeError, match="no parameters to restore"):
        stop.restore(tr.network)


def test_a_run_that_ends_without_stopping_keeps_its_last_parameters(backend):
    snaps = Snapshots()
    stop = EarlyStopping(patience=10)
    tr = bn_trainer(backend, stop, extra=[snaps], epochs=5)
    h = tr.fit()
    assert h.stop_reason is None and h.stopped_epoch is None and h.epoch[-1] == 5
    np.testing.assert_array_equal(to_numpy(tr.network.params.flat), snaps.params[5])
    stop.restore(tr.network)  # on request: the best (epoch 2, 0.7)
    np.testing.assert_array_equal(to_numpy(tr.network.params.flat), snaps.params[2])


def test_early_stopping_survives_resume(backend, tmp_path):
    """Stopped by its epochs at 4, after the best (2): the resumed run restores the best
    parameters from the checkpoint's copy, and ends as the straight run does."""
    straight = bn_trainer(backend, EarlyStopping(patience=3))
    straight.fit()
    first = bn_trainer(backend, EarlyStopping(patience=3), epochs=4,
                       checkpoint_dir=tmp_path)
    assert first.fit().stop_reason is None
    again = EarlyStopping(patience=3)
    resumed = bn_trainer(backend, again, checkpoint_dir=tmp_path, resume=True)
    h = resumed.fit()
    assert (again.best, again.best_epoch) == (0.7, 2)
    assert h.to_dict() == {**straight.history.to_dict(), "elapsed_s": h.elapsed_s}
    for a, b in ((resumed.network.params.flat, straight.network.params.flat),
                 (resumed.network.buffers.flat, straight.network.buffers.flat)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # and the stopped run's checkpoint resumes as stopped
    done = bn_trainer(backend, EarlyStopping(patience=3), epochs=20, checkpoint_dir=tmp_path,
                      resume=True)
    assert done.fit().iterations == h.iterations


def test_resume_refuses_another_kind_of_hook_and_warns_on_a_missing_state(tmp_path):
    bn_trainer("numpy", EarlyStopping(patience=3), epochs=2, checkpoint_dir=tmp_path).fit()
    with pytest.raises(ValueError, match="on_evaluate\\[1\\] is Snapshots"):
        Trainer(MultiLayerNet(4, [6, 5], 3, batchnorm=True, backend="numpy", seed=0),
                optim.SGD(0.1), *toy(), validation_data=toy(), epochs=4, batch_size=8,
                seed=0, verbose=False, checkpoint_dir=tmp_path, resume=True,
                on_evaluate=[scripted, type("Snapshots", (Snapshots,), {
                    "state_dict": lambda self: {}, "load_state_dict": lambda self, s: None})(),
                    EarlyStopping()]).fit()
    with pytest.raises(ValueError, match="watched 'val_acc'"):
        bn_trainer("numpy", EarlyStopping(metric="train_acc"), checkpoint_dir=tmp_path,
                   resume=True).fit()
    # a checkpoint of a run without early stopping: it starts afresh, and says so
    x, t = toy()
    Trainer(MultiLayerNet(4, [6, 5], 3, batchnorm=True, backend="numpy", seed=0),
            optim.SGD(0.1), x, t, validation_data=(x, t), epochs=2, batch_size=8, seed=0,
            verbose=False, checkpoint_dir=tmp_path / "plain", on_evaluate=scripted).fit()
    with pytest.warns(UserWarning, match=r"no state for on_evaluate\[1\] \(EarlyStopping\)"):
        bn_trainer("numpy", EarlyStopping(), checkpoint_dir=tmp_path / "plain",
                   resume=True).fit()


def test_on_evaluate_takes_a_list_called_in_order(backend):
    calls = []
    x, t = toy(n=12)
    net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
    Trainer(net, optim.SGD(0.1), x, t, epochs=2, batch_size=4, verbose=False,
            on_evaluate=[lambda tr: calls.append(("a", tr.epoch)),
                         lambda tr: calls.append(("b", tr.epoch))]).fit()
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    with pytest.raises(TypeError, match=r"on_evaluate\[1\] must be callable"):
        Trainer(net, optim.SGD(0.1), x, t, on_evaluate=[print, 3])
    with pytest.raises(TypeError, match="on_evaluate must be callable"):
        Trainer(net, optim.SGD(0.1), x, t, on_evaluate="stop")


def test_a_raising_hook_still_ends_fit_at_once():
    x, t = toy(n=12)
    net = MultiLayerNet(4, [5], 3, backend="numpy", seed=0)

    def prune(tr):
        if tr.epoch == 1:
            raise RuntimeError("pruned")

    tr = Trainer(net, optim.SGD(0.1), x, t, epochs=5, batch_size=4, verbose=False,
                 on_evaluate=[EarlyStopping(metric="train_acc", patience=9), prune])
    with pytest.raises(RuntimeError, match="pruned"):
        tr.fit()
    assert tr.history.iterations == 3


def test_early_stopping_bad_arguments():
    for kwargs, exc, match in [(dict(metric="val_loss"), ValueError, "metric"),
                               (dict(patience=-1), ValueError, "patience"),
                               (dict(patience=2.5), TypeError, "patience"),
                               (dict(min_delta=-0.1), ValueError, "min_delta"),
                               (dict(restore_best=1), TypeError, "restore_best")]:
        with pytest.raises(exc, match=match):
            EarlyStopping(**kwargs)
    x, t = toy(n=12)
    net = MultiLayerNet(4, [5], 3, backend="numpy", seed=0)
    with pytest.raises(ValueError, match="validation_data"):
        Trainer(net, optim.SGD(0.1), x, t, verbose=False, on_evaluate=EarlyStopping()).fit()
    assert accel.EarlyStopping is EarlyStopping


# -- learning-rate decay per epoch or per iteration


class LrRecording(Trainer):
    def step(self, x, t):
        self.lrs = getattr(self, "lrs", []) + [self.optimizer.lr]
        return super().step(x, t)


def lr_trainer(backend, unit, **kwargs):
    x, t = toy(n=10)
    net = MultiLayerNet(4, [5], 3, backend=backend, seed=0)
    return LrRecording(net, optim.SGD(1.0), x, t, epochs=3, batch_size=4, seed=0,
                       verbose=False, schedule=schedules.InverseSqrtDecay(0.5),
                       schedule_unit=unit, **kwargs)


def test_per_iteration_lr_is_the_schedule_of_the_iteration(backend):
    sched = schedules.InverseSqrtDecay(0.5)
    it = lr_trainer(backend, "iteration")
    h = it.fit()
    assert h.iterations == 9
    assert it.lrs == [sched(i) for i in range(9)]  # 0.5, 0.5, 0.5/√2, ... one per step
    assert h.lr == [sched(0), sched(2), sched(5), sched(8)]  # the last step's lr
    ep = lr_trainer(backend, "epoch")
    ep.fit()
    assert ep.lrs == [sched(e) for e in range(3) for _ in range(3)]  # from each epoch's start


def test_per_iteration_lr_continues_exactly_after_a_resume(backend, tmp_path):
    straight = lr_trainer(backend, "iteration")
    straight.fit()
    part = lr_trainer(backend, "iteration", checkpoint_dir=tmp_path, max_iterations=4)
    part.fit()
    rest = lr_trainer(backend, "iteration", checkpoint_dir=tmp_path, resume=True)
    rest.fit()
    assert part.lrs + rest.lrs == straight.lrs
    np.testing.assert_array_equal(to_numpy(rest.network.params.flat),
                                  to_numpy(straight.network.params.flat))


def test_schedule_unit_and_a_schedule_that_reaches_zero_are_named():
    x, t = toy(n=10)
    net = MultiLayerNet(4, [5], 3, backend="numpy", seed=0)
    with pytest.raises(ValueError, match="schedule_unit"):
        Trainer(net, optim.SGD(0.1), x, t, schedule_unit="batch")
    tr = Trainer(net, optim.SGD(0.1), x, t, epochs=1, batch_size=2, verbose=False,
                 schedule=lambda i: 0.1 if i < 3 else 0.0, schedule_unit="iteration")
    with pytest.raises(ValueError, match="schedule .* at iteration 3: lr must be > 0"):
        tr.fit()
