"""Continuing a run is exact however it stopped (Ctrl-C, max_iterations, a checkpoint), a
checkpoint refuses a run it does not fit, and one checkpoint folder serves one run at a time."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_checkpoint import _assert_same_run, _trainer, small_net, toy

from accel import MultiLayerNet, Trainer, optim
from accel.checkpoint import DirectoryInUseError
from accel.trainer import TrainingInterrupted


def _interrupt_at(trainer, iteration):
    """Deliver a real SIGINT during the step that makes ``iteration``."""
    real = trainer.step

    def step(x, t):
        out = real(x, t)
        if trainer.history.iterations == iteration:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    trainer.step = step


@pytest.fixture
def sigint_default():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_fit_again_after_ctrl_c_continues_the_same_epoch(backend, sigint_default):
    full = _trainer(backend)
    full.fit()
    run = _trainer(backend)  # no checkpoint_dir: continuation from memory
    _interrupt_at(run, 14)  # epoch 3, second of its 6 batches
    with pytest.raises(TrainingInterrupted):
        run.fit()
    assert run.epoch == 2 and run.offset == 16
    seen = []
    real = run.step
    run.step = lambda x, t: (seen.append(x.shape[0]), real(x, t))[1]
    run.fit()
    assert sum(seen[:4]) == 45 - 16  # the rest of epoch 3: no sample twice, none skipped
    _assert_same_run(full, run)


def test_max_iterations_mid_epoch_records_the_position(backend, tmp_path):
    full = _trainer(backend)
    full.fit()
    part = _trainer(backend, tmp_path, max_iterations=9)  # epoch 2, third batch
    part.fit()
    assert (part.epoch, part.offset, part.history.epoch[-1]) == (1, 24, 1.5333)
    resumed = _trainer(backend, tmp_path, resume=True)
    resumed.fit()
    # the evaluation the stop made (at epoch 1.5333) is replaced: the same run, history too
    assert 1.5333 not in resumed.history.epoch
    _assert_same_run(full, resumed)
    # in memory too: raise the limit, fit again
    again = _trainer(backend, max_iterations=9)
    again.fit()
    again.max_iterations = None
    again.fit()
    _assert_same_run(full, again)


def test_an_evaluation_off_the_grid_is_replaced_when_the_run_goes_on(tmp_path):
    """epochs raised on resume: the stop's evaluation at epoch 3 is not on evaluate_every=2's
    grid, and an uninterrupted 4-epoch run has none there."""
    full = _trainer("numpy", epochs=4, evaluate_every=2)
    full.fit()
    assert full.history.epoch == [0, 2, 4]
    _trainer("numpy", tmp_path, epochs=3, evaluate_every=2).fit()
    resumed = _trainer("numpy", tmp_path, epochs=4, evaluate_every=2, resume=True)
    resumed.fit()
    _assert_same_run(full, resumed)
    # a stop on the grid stays: resuming with the same epochs changes nothing
    done = _trainer("numpy", tmp_path, epochs=4, evaluate_every=2, resume=True)
    done.fit()
    assert done.history.epoch == [0, 2, 4]


def test_resume_refuses_fewer_epochs_and_other_data(tmp_path):
    _trainer("numpy", tmp_path, epochs=3).fit()
    path = tmp_path / "last.npz"
    with pytest.raises(ValueError, match="saved at epoch 3, beyond this trainer's epochs=2"):
        _trainer("numpy", resume=path, epochs=2).fit()
    x, t = toy(n=45)
    x[7, 2] += 1.0  # same length, one value different
    other = Trainer(small_net("numpy"), optim.Adam(lr=0.01), x, t, epochs=4, batch_size=8,
                    verbose=False, resume=path)
    before = other.network.params.flat.copy()
    with pytest.raises(ValueError, match="other training data"):
        other.fit()
    np.testing.assert_array_equal(other.network.params.flat, before)  # nothing changed
    assert other.resume == path  # still there: fixing the data and fitting again resumes


def test_two_trainers_cannot_share_a_checkpoint_folder(tmp_path):
    inner = []

    def second_run(trainer):
        if trainer.history.epoch[-1] == 1:
            with pytest.raises(DirectoryInUseError, match=f"pid {os.getpid()}"):
                _trainer("numpy", tmp_path, epochs=1).fit()
            inner.append(True)

    _trainer("numpy", tmp_path, epochs=2, on_evaluate=second_run).fit()
    assert inner == [True]
    _trainer("numpy", tmp_path, epochs=3, resume=True).fit()  # free again after the first


def test_save_checkpoint_goes_through_the_folder_lock(tmp_path):
    """A second trainer (other data) cannot write into a folder a run is training in, by
    save_checkpoint() or net.save(); the run's checkpoint stays its own and resumes."""
    x, t = toy(n=64)
    intruder = Trainer(small_net("numpy"), optim.Adam(lr=0.01), x, t, batch_size=8,
                       verbose=False, checkpoint_dir=tmp_path)
    refused = []

    def intrude(trainer):
        if trainer.history.epoch[-1] == 1:
            for write in (intruder.save_checkpoint,
                          lambda: intruder.save_checkpoint(tmp_path / "other.npz"),
                          lambda: small_net("numpy").save(tmp_path / "last.npz")):
                with pytest.raises(DirectoryInUseError, match=f"pid {os.getpid()}"):
                    write()
                refused.append(True)

    _trainer("numpy", tmp_path, epochs=2, on_evaluate=intrude).fit()
    assert refused == [True] * 3 and not (tmp_path / "other.npz").exists()
    full = _trainer("numpy", epochs=3)
    full.fit()
    resumed = _trainer("numpy", tmp_path, epochs=3, resume=True)
    resumed.fit()
    _assert_same_run(full, resumed)
    # with the folder free, the lock is taken for the write and given back
    assert intruder.save_checkpoint(tmp_path / "mine.npz") == tmp_path / "mine.npz"
    _trainer("numpy", tmp_path, epochs=4, resume=True).fit()


def test_save_checkpoint_is_refused_while_another_process_holds_the_folder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryInUseError, match=f"pid {proc.pid}"):
            _trainer("numpy", tmp_path).save_checkpoint()
        with pytest.raises(DirectoryInUseError, match=f"pid {proc.pid}"):
            small_net("numpy").save(tmp_path / "net.npz")
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.glob("*.npz")) == []


def test_resume_true_is_decided_when_fit_starts(tmp_path):
    """Two trainers built on one folder: the second, fitted after the first, continues
    from the first's checkpoint instead of starting over and overwriting it."""
    first = _trainer("numpy", tmp_path, epochs=2, resume=True)
    # another shuffling seed: only a resume (which restores the generator) matches `full`
    second = _trainer("numpy", tmp_path, epochs=4, resume=True, seed=99)
    first.fit()
    second.fit()
    full = _trainer("numpy", epochs=4)
    full.fit()
    _assert_same_run(full, second)
    # fitting the first again starts from what the second wrote since, not from memory
    loaded = []
    real = first.load_checkpoint
    first.load_checkpoint = lambda path: (loaded.append(path), real(path))[1]
    first.epochs = 4
    first.fit()
    assert loaded == [tmp_path / "last.npz"]
    _assert_same_run(full, first)
    first.fit()  # its own file now: nothing to read, nothing left to train
    assert len(loaded) == 1


_HOLD = textwrap.dedent("""
    import sys, time
    from accel.checkpoint import DirectoryLock
    with DirectoryLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_the_lock_dies_with_its_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryInUseError, match=f"pid {proc.pid}"):
            _trainer("numpy", tmp_path, epochs=1).fit()
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
    _trainer("numpy", tmp_path, epochs=1).fit()


def test_stale_temporaries_are_removed_and_files_honour_the_umask(tmp_path):
    stale = tmp_path / ".last.npz.k2j3h4.tmp"  # left by a save killed with -9
    stale.write_bytes(b"partial")
    old = os.umask(0o027)
    try:
        _trainer("numpy", tmp_path, epochs=1).fit()
    finally:
        os.umask(old)
    assert not stale.exists()
    assert (tmp_path / "last.npz").stat().st_mode & 0o777 == 0o640


def test_checkpoint_dir_that_is_a_file_is_refused_at_construction(tmp_path):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="checkpoint_dir="):
        _trainer("numpy", f)


# -- running statistics under the non-finite guard


def _exploding(mode, backend="numpy"):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 3, 64)
    net = MultiLayerNet(6, [5, 4], 3, batchnorm=True, seed=0, backend=backend)
    return Trainer(net, optim.SGD(1e8), x, t, epochs=3, batch_size=16, verbose=False,
                   on_nonfinite=mode)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_nonfinite_running_statistics_raise(backend):
    tr = _exploding("raise", backend)
    with pytest.raises(Exception, match="running statistics running_var2") as info:
        tr.fit()
    assert info.value.names == ("running_var2",)
    assert np.isfinite(tr.network.buffers.flat).all()  # put back


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_nonfinite_running_statistics_skip_keeps_them_finite():
    tr = _exploding("skip")
    h = tr.fit()
    assert h.skipped_steps > 0
    assert np.isfinite(tr.network.buffers.flat).all()
    unguarded = _exploding(None)
    unguarded.fit()
    assert not np.isfinite(unguarded.network.buffers.flat).all()  # what the guard prevents


def test_a_clean_exit_leaves_no_lock_file(tmp_path):
    _trainer("numpy", tmp_path, epochs=1).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]
    _trainer("numpy", tmp_path, epochs=2, resume=True).fit()  # and the folder is free again
    assert not (tmp_path / ".lock").exists()


def test_a_lock_on_a_file_removed_meanwhile_is_retaken_on_the_new_one(tmp_path, monkeypatch):
    """A run that opened .lock just before its holder ended and removed it must not lock
    that orphan: a third run would create a new .lock and both would write."""
    from accel import checkpoint

    real_open, opened = os.open, []

    def open_then_lose_the_race(path, *args):
        fd = real_open(path, *args)
        if not opened:  # the holder ends between our open and our flock
            os.unlink(path)
        opened.append(fd)
        return fd

    monkeypatch.setattr(checkpoint.os, "open", open_then_lose_the_race)
    with checkpoint.DirectoryLock(tmp_path) as lock:
        assert len(opened) == 2
        held = os.fstat(lock._fd)
        here = os.stat(tmp_path / ".lock")
        assert (held.st_ino, held.st_dev) == (here.st_ino, here.st_dev)
    assert not (tmp_path / ".lock").exists()
