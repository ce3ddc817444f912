"""Checkpoints: the file format, atomic writes, clear errors, optimizer state, exact resume."""

import json
import os
import signal
import zipfile

import numpy as np
import pytest

from accel import MultiLayerNet, Trainer, checkpoint, optim, schedules
from accel.backend import to_numpy
from accel.checkpoint import CheckpointError
from accel.trainer import TrainingInterrupted


def toy(n=37, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n)


def small_net(backend, **kw):
    kw = {"batchnorm": True, "dropout": 0.2, "weight_decay": 1e-3, "seed": 0, **kw}
    return MultiLayerNet(6, [8, 7], 3, backend=backend, **kw)


# -- network files


def test_save_load_same_predictions_and_state(backend, tmp_path):
    x, t = toy()
    net = small_net(backend)
    net.gradient(x, t)  # moves the BatchNorm running statistics and the dropout generator
    path = net.save(tmp_path / "net.npz")
    back = MultiLayerNet.load(path, backend=backend)
    assert back.config() == net.config()
    np.testing.assert_array_equal(to_numpy(back.params.flat), to_numpy(net.params.flat))
    np.testing.assert_array_equal(to_numpy(back.predict(x)), to_numpy(net.predict(x)))
    # train mode: same batch statistics and the same next dropout mask
    np.testing.assert_array_equal(to_numpy(back.predict(x, train=True)),
                                  to_numpy(net.predict(x, train=True)))
    for a, b in zip(back.batchnorm_layers(), net.batchnorm_layers()):
        np.testing.assert_array_equal(to_numpy(a.running_var), to_numpy(b.running_var))


def test_file_is_an_npz_with_a_json_header_and_no_backend(tmp_path):
    net = small_net("numpy", dtype=np.float64)
    path = net.save(tmp_path / "net.npz")
    with np.load(path) as z:
        np.testing.assert_array_equal(z["network/params/W1"], net.params["W1"])
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
    assert header["format"] == "accel-checkpoint"
    assert header["format_version"] == checkpoint.FORMAT_VERSION
    assert header["arrays"]["network/params/W2"] == {
        "shape": [8, 7], "dtype": "<f8", "crc32": header["arrays"]["network/params/W2"]["crc32"]}
    text = json.dumps(header)
    assert "numpy" not in text and "cupy" not in text


def test_load_checks_the_architecture_it_is_loaded_into(tmp_path):
    path = small_net("numpy").save(tmp_path / "a.npz")
    state = checkpoint.load(path)["state"]["network"]
    other = small_net("numpy", batchnorm=False)
    with pytest.raises(ValueError, match="batchnorm"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="batchnorm"):
        checkpoint.restore(other, state, path)


def test_crash_mid_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"
    net = small_net("numpy")
    net.save(path)
    before = path.read_bytes()
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing)
    net.params["W1"] = 0
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.npz"]  # the temporary file is gone


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[: len(b) // 2], "truncated or corrupted|not a zip"),
    (lambda b: b[:10], "not a zip"),
    (lambda b: b"", "empty file"),
    (lambda b: b"hello, world" * 10, "not a zip"),
])
def test_damaged_files_name_the_file_and_the_problem(tmp_path, damage, match):
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=match) as info:
        MultiLayerNet.load(path, backend="numpy")
    assert str(path) in str(info.value)


def test_flipped_data_byte_is_caught(tmp_path):
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"NUMPY", raw.find(b"network/params/W2.npy")) + 200
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\") + ".*(CRC|corrupt)"):
        MultiLayerNet.load(path, backend="numpy")


def _rewrite_header(path, change):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(members["header.json"])
    change(header)
    members["header.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def test_newer_version_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)
    _rewrite_header(path, lambda h: h.update(format_version=checkpoint.FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="newer accel.*upgrade"):
        MultiLayerNet.load(path, backend="numpy")
    _rewrite_header(path, lambda h: h.update(format="something-else"))
    with pytest.raises(CheckpointError, match="not an accel checkpoint"):
        MultiLayerNet.load(path, backend="numpy")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="plain.npz.*no header.json"):
        MultiLayerNet.load(tmp_path / "plain.npz", backend="numpy")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        MultiLayerNet.load(tmp_path / "missing.npz", backend="numpy")


def test_header_that_lies_about_an_array(tmp_path):
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)
    _rewrite_header(path, lambda h: h["arrays"]["network/params/b1"].update(shape=[9]))
    with pytest.raises(CheckpointError, match="b1"):
        MultiLayerNet.load(path, backend="numpy")


# -- optimizer state


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
@pytest.mark.parametrize("flat", [True, False])
def test_optimizer_state_dict_round_trip(backend, name, flat):
    x, t = toy()
    nets = [small_net(backend, dropout=0.0, dtype=np.float64) for _ in range(2)]
    opts = [optim.get_optimizer(name, lr=0.01), optim.get_optimizer(name, lr=0.5)]

    def step(net, opt):
        grads = net.gradient(x, t)
        if flat:
            opt.update(net.params, grads)
        else:
            opt.update(dict(net.params), dict(grads))

    for _ in range(3):
        step(nets[0], opts[0])
    nets[1].params.flat[...] = nets[0].params.flat
    for a, b in zip(nets[1].batchnorm_layers(), nets[0].batchnorm_layers()):
        a.running_mean[...], a.running_var[...] = b.running_mean, b.running_var
    opts[1].load_state_dict(opts[0].state_dict())
    assert opts[1].t == 3 and opts[1].lr == 0.01
    assert set(opts[1].state) == ({"flat"} if flat else set(nets[0].params))
    for _ in range(2):
        for net, opt in zip(nets, opts):
            step(net, opt)
    np.testing.assert_array_equal(to_numpy(nets[0].params.flat), to_numpy(nets[1].params.flat))


def test_state_dict_is_a_snapshot_and_load_checks_it():
    net = small_net("numpy", dropout=0.0)
    opt = optim.Adam(lr=0.01)
    x, t = toy()
    opt.update(net.params, net.gradient(x, t))
    sd = opt.state_dict()
    m = sd["state"]["flat"]["m"].copy()
    opt.update(net.params, net.gradient(x, t))
    np.testing.assert_array_equal(sd["state"]["flat"]["m"], m)
    with pytest.raises(ValueError, match="optimizer 'Adam', this one is 'SGD'"):
        optim.SGD(0.1).load_state_dict(sd)
    bad = dict(sd, hyperparameters=dict(sd["hyperparameters"], beta1=1.5))
    with pytest.raises(ValueError, match="beta1 must be in"):
        optim.Adam().load_state_dict(bad)
    with pytest.raises(ValueError, match="t .*>= 0"):
        optim.Adam().load_state_dict(dict(sd, t=-1))
    short = dict(sd, state={"flat": {"m": m[:3], "v": m[:3]}})
    with pytest.raises(ValueError, match="flat"):
        opt.load_state_dict(short)
    assert opt.t == 2  # nothing changed by the refused loads


# -- trainer checkpoints and exact resume


def _trainer(backend, tmp_path=None, optimizer=None, **kw):
    x, t = toy(n=45)
    net = small_net(backend)
    kw = {"epochs": 4, "batch_size": 8, "seed": 3, "verbose": False,
          "schedule": schedules.ExponentialDecay(0.01, 0.9), **kw}
    if tmp_path is not None:
        kw.setdefault("checkpoint_dir", tmp_path)
    return Trainer(net, optimizer or optim.Adam(lr=0.01), x, t, x[:20], t[:20], **kw)


def _assert_same_run(a, b):
    np.testing.assert_array_equal(to_numpy(a.network.params.flat), to_numpy(b.network.params.flat))
    for la, lb in zip(a.network.batchnorm_layers(), b.network.batchnorm_layers()):
        np.testing.assert_array_equal(to_numpy(la.running_mean), to_numpy(lb.running_mean))
    np.testing.assert_array_equal(to_numpy(a.optimizer.state["flat"][1]),
                                  to_numpy(b.optimizer.state["flat"][1]))
    assert a.optimizer.t == b.optimizer.t and a.optimizer.lr == b.optimizer.lr
    ha, hb = a.history.to_dict(), b.history.to_dict()
    ha.pop("elapsed_s"), hb.pop("elapsed_s")
    assert ha == hb


def test_resume_at_an_epoch_boundary_is_bit_identical(backend, tmp_path):
    full = _trainer(backend)
    full.fit()
    first = _trainer(backend, tmp_path, epochs=2)
    first.fit()
    path = tmp_path / "last.npz"
    assert path.is_file() and first.last_checkpoint == path
    resumed = _trainer(backend, tmp_path, epochs=4, resume=path, seed=99)
    resumed.fit()
    _assert_same_run(full, resumed)
    assert MultiLayerNet.load(path, backend=backend).config() == full.network.config()


@pytest.mark.parametrize("make", [
    lambda: optim.AdaDelta(weight_decay=1e-2, clip_norm=0.5),
    lambda: optim.AdamW(lr=0.01, weight_decay=0.1, decay_mask=["b1", "W1"], clip_norm=1.0),
], ids=["adadelta-clip", "adamw-mask-clip"])
def test_resume_keeps_the_optimizers_clip_norm_and_decay_mask(tmp_path, make):
    """The resumed trainer is given the optimizer's defaults: the checkpoint brings back
    clip_norm and decay_mask (a mask that is not the weight block: one state per array)."""
    full = _trainer("numpy", optimizer=make())
    full.fit()
    _trainer("numpy", tmp_path, optimizer=make(), epochs=2).fit()
    resumed = _trainer("numpy", tmp_path, optimizer=type(make())(), resume=True)
    resumed.fit()
    a, b = full.optimizer, resumed.optimizer
    assert a.hyperparameters() == b.hyperparameters() and b.clip_norm is not None
    np.testing.assert_array_equal(full.network.params.flat, resumed.network.params.flat)
    assert a.state.keys() == b.state.keys()
    for key in a.state:
        for sa, sb in zip(a.state[key], b.state[key]):
            np.testing.assert_array_equal(sa, sb)


def test_an_optimizer_saved_before_decay_masks_decays_every_array():
    """Hyperparameters saved before ``decay_mask`` and ``clip_norm`` existed load as what
    those optimizers did: decay every parameter, no clipping."""
    sd = optim.SGD(0.1, weight_decay=0.01).state_dict()
    for name in ("decay_mask", "clip_norm"):
        del sd["hyperparameters"][name]
    opt = optim.SGD(0.5, clip_norm=2.0)
    opt.load_state_dict(sd)
    assert (opt.lr, opt.weight_decay, opt.decay_mask, opt.clip_norm) == (0.1, 0.01, "all", None)


def test_ctrl_c_mid_epoch_checkpoints_and_resumes_exactly(backend, tmp_path, capsys):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    full = _trainer(backend)
    full.fit()
    run = _trainer(backend, tmp_path)
    real_step = run.step

    def step(x, t):
        out = real_step(x, t)
        if run.history.iterations == 14:  # epoch 3, second batch (5 batches an epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    run.step = step
    try:
        with pytest.raises(TrainingInterrupted) as info:
            run.fit()
        assert signal.signal(signal.SIGINT, previous) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    path = tmp_path / "last.npz"
    assert info.value.checkpoint == path and str(path) in capsys.readouterr().err
    assert run.history.iterations == 14 and run.offset == 16  # stopped after a whole step
    resumed = _trainer(backend, tmp_path, resume=True)
    resumed.fit()
    _assert_same_run(full, resumed)


def test_checkpoint_every_and_a_final_one(tmp_path, monkeypatch):
    saved = []
    tr = _trainer("numpy", tmp_path, epochs=5, checkpoint_every=2)
    real = tr.save_checkpoint
    monkeypatch.setattr(tr, "save_checkpoint", lambda: saved.append(tr.epoch) or real())
    tr.fit()
    assert saved == [2, 4, 5]


def test_resume_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    _trainer("numpy", tmp_path, epochs=1).fit()
    path = tmp_path / "last.npz"
    with pytest.raises(ValueError, match="batch_size=8.*batch_size=9"):
        _trainer("numpy", resume=path, batch_size=9).fit()
    x, t = toy(n=45)
    other = Trainer(small_net("numpy"), optim.SGD(0.1), x, t, resume=path, batch_size=8,
                    verbose=False)
    with pytest.raises(ValueError, match="optimizer Adam.*SGD"):
        other.fit()
    wide = Trainer(MultiLayerNet(6, [9, 7], 3, backend="numpy", batchnorm=True, dropout=0.2,
                                 weight_decay=1e-3), optim.Adam(), x, t, resume=path,
                   batch_size=8, verbose=False)
    with pytest.raises(CheckpointError, match="hidden_sizes"):
        wide.fit()
    small_net("numpy").save(tmp_path / "net.npz")
    with pytest.raises(CheckpointError, match="not a Trainer checkpoint"):
        _trainer("numpy", resume=tmp_path / "net.npz").fit()


def test_resume_true_without_a_file_starts_fresh(tmp_path):
    tr = _trainer("numpy", tmp_path, epochs=1, resume=True)
    assert tr.fit().epoch == [0, 1]


# -- crafted files: refused before they cost memory or change anything


def test_a_crafted_config_is_refused_before_allocating(tmp_path):
    import tracemalloc

    path = small_net("numpy").save(tmp_path / "net.npz")
    _rewrite_header(path, lambda h: h["state"]["network"]["config"].update(
        hidden_sizes=[10**7, 7]))  # would be 6×1e7 + 1e7×7 floats: over 500 MB
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"params/W1 is \(6, 8\), the config needs "
                                                  r"\(6, 10000000\)"):
            MultiLayerNet.load(path, backend="numpy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak


def test_compressed_members_are_refused(tmp_path):
    path = small_net("numpy").save(tmp_path / "net.npz")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match="compressed"):
        checkpoint.load(path)


def test_a_format_1_network_file_still_loads(tmp_path):
    """accel 0.1.0 wrote sections at the top level and no bn_running_var_init."""
    net = small_net("numpy")
    path = net.save(tmp_path / "net.npz")

    def to_v1(h):
        h["format_version"] = 1
        section = h.pop("state")["network"]
        del section["config"]["bn_running_var_init"]
        h["network"] = section

    _rewrite_header(path, to_v1)
    back = MultiLayerNet.load(path, backend="numpy")
    np.testing.assert_array_equal(back.params.flat, net.params.flat)
    np.testing.assert_array_equal(back.buffers.flat, net.buffers.flat)


def test_a_header_nested_too_deeply_is_a_damaged_file(tmp_path):
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["header.json"] = b"[" * 100_000 + b"]" * 100_000
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match="net.npz: header.json is nested too deeply"):
        checkpoint.load(path)


def test_running_out_of_memory_is_not_called_a_corrupt_file(tmp_path, monkeypatch):
    """Sizes are checked against the file before allocating: a MemoryError while reading a
    sound file is the machine's, and reaches the caller as itself."""
    path = tmp_path / "net.npz"
    small_net("numpy").save(path)

    def no_memory(*args, **kwargs):
        raise MemoryError("no room for the array")

    monkeypatch.setattr(checkpoint.np, "frombuffer", no_memory)
    with pytest.raises(MemoryError, match="no room"):
        checkpoint.load(path)
