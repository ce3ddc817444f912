"""Every public entry point refuses a bad argument with TypeError/ValueError naming the
argument (and, for a plain value, the value), accepts a good one, and changes nothing when it
refuses. Hypothesis draws the argument and the value (odd types, NaN, ±inf, huge and negative
numbers, empty and misshapen arrays, classes, callables) for each entry point's table row.

``ACCEL_FUZZ_EXAMPLES=2000 pytest tests/test_arguments.py`` explores further than the default
run (which is derandomized: the same examples each time)."""

import atexit
import gzip
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import accel
from accel import (
    MultiLayerNet,
    Trainer,
    checkpoint,
    datasets,
    ewma,
    gradcheck,
    initializers,
    layers,
    optim,
    preprocessing,
    schedules,
)
from accel.checkpoint import CheckpointError  # noqa: F401  (a ValueError)
from accel.history import History

EXAMPLES = int(os.environ.get("ACCEL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck), database=None)

# -- the values


class Odd:
    """An object of no use to anyone."""

    def __repr__(self):
        return "Odd()"


JUNK = [None, True, False, 0, 1, -1, 2, 3, 7, 2**70, -2**70, 0.0, -0.0, 0.5, -0.5, 1.0, 1.5,
        2.5, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf, "", "x", "relu", "1",
        "numpy", b"x", [], [1], [1.0, 2.0], (), (3,), {}, {"a": 1}, Odd(), np.float32(math.nan),
        np.float64(0.5), np.int64(3), np.int64(-3), np.bool_(True), np.array(1.5),
        np.array([1.0, 2.0]), np.zeros((0, 4)), np.ones((3, 4), np.int32), complex(1, 1), int,
        optim.Adam, print, Path("nonexistent/x")]
VALUES = st.one_of(st.sampled_from(JUNK), st.integers(-5000, 5000),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                   st.lists(st.integers(-3, 300), max_size=3))

# -- what each argument accepts: True must be accepted, False refused, None either


def _int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and \
        math.isfinite(v)


def POS_INT(v):
    return _int(v) and v >= 1


def SIZE(v):  # a layer size: absurdly large ones may fail for memory
    return None if _int(v) and v > 10**4 else POS_INT(v)


def NONNEG_INT(v):
    return _int(v) and v >= 0


def POS(v):
    return _real(v) and v > 0


def NONNEG(v):
    return _real(v) and v >= 0


def UNIT(v):  # [0, 1)
    return _real(v) and 0 <= v < 1


def FRACTION(v):  # (0, 1)
    return _real(v) and 0 < v < 1


def BOOL(v):
    return isinstance(v, (bool, np.bool_))


def LATE_T(v):  # a decaying schedule reaches lr 0 (refused) at a late enough epoch
    return None if NONNEG(v) else False


def LR0(v):  # a denormal lr0 decays to 0 (refused) within a few epochs
    return None if POS(v) and v < 1e-300 else POS(v)


def RATE(v):  # a huge decay rate takes lr to 0 (refused) at once
    return None if NONNEG(v) and v > 1e300 else NONNEG(v)


def BLAS_N(v):  # a C int in the BLAS library
    return None if _int(v) and v > 2**31 - 1 else POS_INT(v)


def SEED(v):
    return v is None or NONNEG_INT(v)


def ANY(v):
    return None


def optional(pred):
    return lambda v: True if v is None else pred(v)


def choice(*names):
    return lambda v: isinstance(v, str) and v.lower() in names


def FLOAT_DTYPE(v):
    if v is None:
        return False
    try:
        return np.dtype(v) in (np.float32, np.float64)
    except Exception:
        return False


def NUMERIC_DTYPE(v):
    if v is None:
        return False
    try:
        return np.dtype(v).kind in "biuf"
    except Exception:
        return False


FILES = Path(tempfile.mkdtemp(prefix="accel-arguments-"))  # files the good calls read
atexit.register(shutil.rmtree, FILES, ignore_errors=True)
X = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
T = np.arange(12) % 3


def _net(**kw):
    return MultiLayerNet(4, [5], 3, backend="numpy", seed=0, **kw)


NET_FILE = _net().save(FILES / "net.npz")
IDX_FILE = FILES / "labels-idx1-ubyte.gz"
IDX_FILE.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])))


def _opt_call(cls):
    def call(**kw):
        kw = {"lr": 0.1, **kw}
        opt = cls(**{k: v for k, v in kw.items() if k not in ("params", "grads")})
        if "params" in kw or "grads" in kw:
            opt.update(kw.get("params", {"w": np.ones(3)}), kw.get("grads", {"w": np.ones(3)}))
        return opt
    return call


def _trainer(**kw):
    net = kw.pop("network") if "network" in kw else _net()
    opt = kw.pop("optimizer", optim.SGD(0.1))
    x, t = kw.pop("x_train", X), kw.pop("t_train", T)
    return Trainer(net, opt, x, t, **{"verbose": False, **kw})


def _schedule(cls, **fixed):
    def call(**kw):
        t = kw.pop("t", 3)  # the epoch or iteration
        return cls(**{**fixed, **kw})(t)
    return call


# entry point name → (call(**kwargs), the kwargs of a good call, {argument: what it accepts})
SPECS = {
    "MultiLayerNet": (lambda **kw: MultiLayerNet(**kw),
                      dict(input_size=4, hidden_sizes=[5], output_size=3, backend="numpy"), {
        "input_size": SIZE, "hidden_sizes": ANY, "output_size": SIZE,
        "activation": choice("relu", "sigmoid", "tanh"), "weight_init": ANY,
        "weight_decay": NONNEG, "batchnorm": BOOL, "dropout": UNIT, "dtype": FLOAT_DTYPE,
        "backend": ANY, "seed": SEED, "bn_momentum": UNIT, "bn_eps": POS,
        "bn_running_var_init": NONNEG, "dropout_inverted": BOOL,
        "output": lambda v: False if not isinstance(v, str) else None, "decay_mask": ANY}),
    "net.predict": (lambda **kw: _net().predict(**kw), dict(x=X), {"x": ANY, "train": BOOL}),
    "net.loss": (lambda **kw: _net().loss(**kw), dict(x=X, t=T),
                 {"x": ANY, "t": ANY, "train": BOOL}),
    "net.accuracy": (lambda **kw: _net().accuracy(**kw), dict(x=X, t=T),
                     {"x": ANY, "t": ANY, "batch_size": POS_INT}),
    "net.gradient": (lambda **kw: _net().gradient(**kw), dict(x=X, t=T), {"x": ANY, "t": ANY}),
    "net.prepare": (lambda **kw: _net().prepare(**kw), dict(x=X, t=T), {"x": ANY, "t": ANY}),
    "MultiLayerNet.load": (lambda **kw: MultiLayerNet.load(**kw), dict(path=NET_FILE),
                           {"path": ANY, "backend": ANY}),
    "net.save": (lambda **kw: _net().save(**kw), dict(path=None), {"path": ANY}),
    "net.load_state_dict": (lambda **kw: _net().load_state_dict(**kw),
                            dict(state=_net().state_dict()), {"state": ANY}),
    **{f"optim.{cls.__name__}": (_opt_call(cls), {}, {
        "lr": POS, "weight_decay": NONNEG,
        **({"momentum": UNIT} if cls in (optim.Momentum, optim.Nesterov) else {}),
        **({"dampening": UNIT} if cls is optim.Momentum else {}),
        **({"eps": POS} if cls in (optim.AdaGrad, optim.RMSProp, optim.Adam, optim.AdamW,
                                   optim.AdaDelta) else {}),
        **({"decay_rate": UNIT} if cls is optim.RMSProp else {}),
        **({"beta1": UNIT, "beta2": UNIT, "folded": BOOL}
           if cls in (optim.Adam, optim.AdamW) else {}),
        **({"rho": UNIT} if cls is optim.AdaDelta else {}),
        "decay_mask": ANY, "clip_norm": optional(POS), "params": ANY, "grads": ANY})
       for cls in (optim.SGD, optim.Momentum, optim.Nesterov, optim.AdaGrad, optim.RMSProp,
                   optim.Adam, optim.AdamW, optim.AdaDelta)},
    "optim.get_optimizer": (lambda **kw: optim.get_optimizer(**kw), dict(name="adam"),
                            {"name": choice(*optim.OPTIMIZERS), "lr": POS}),
    "optimizer.load_state_dict": (lambda **kw: optim.Adam().load_state_dict(**kw),
                                  dict(state_dict=optim.Adam().state_dict()),
                                  {"state_dict": ANY, "backend": ANY}),
    "schedules.StepDecay": (_schedule(schedules.StepDecay), dict(lr0=0.1),
                            {"lr0": LR0, "step": POS_INT, "factor": None, "t": LATE_T}),
    "schedules.ExponentialDecay": (_schedule(schedules.ExponentialDecay), dict(lr0=0.1),
                                   {"lr0": LR0, "base": None, "t": LATE_T}),
    "schedules.InverseSqrtDecay": (_schedule(schedules.InverseSqrtDecay), dict(lr0=0.1),
                                   {"lr0": LR0, "t": NONNEG}),
    "schedules.InverseTimeDecay": (_schedule(schedules.InverseTimeDecay), dict(lr0=0.1),
                                   {"lr0": LR0, "rate": RATE, "t": NONNEG}),
    "schedules.StaircaseDecay": (_schedule(schedules.StaircaseDecay), dict(lr0=0.1),
                                 {"lr0": LR0, "rate": RATE, "interval": POS_INT,
                                  "t": NONNEG}),
    "schedules.Constant": (_schedule(schedules.Constant), dict(lr0=0.1),
                           {"lr0": LR0, "t": NONNEG}),
    "layers.Affine": (lambda **kw: layers.Affine(**kw).forward(X),
                      dict(W=np.ones((4, 2), np.float32), b=np.zeros(2, np.float32)),
                      {"W": ANY, "b": ANY}),
    "layers.Dropout": (lambda **kw: layers.Dropout(**kw).forward(X, True), {},
                       {"ratio": UNIT, "inverted": BOOL}),
    "layers.BatchNorm": (lambda **kw: layers.BatchNorm(**kw).forward(X, True),
                         dict(gamma=np.ones(4, np.float32), beta=np.zeros(4, np.float32)),
                         {"gamma": ANY, "beta": ANY, "momentum": UNIT, "eps": POS}),
    "layers.SoftmaxWithLoss": (lambda **kw: layers.SoftmaxWithLoss().forward(**kw),
                               dict(x=X[:, :3], t=T), {"x": ANY, "t": ANY, "train": ANY}),
    "layers.ReLU": (lambda **kw: layers.ReLU().forward(**kw), dict(x=X), {"x": ANY}),
    "Trainer": (_trainer, {}, {
        "network": ANY, "optimizer": ANY, "x_train": ANY, "t_train": ANY, "epochs": POS_INT,
        "batch_size": POS_INT, "schedule": ANY, "evaluate_sample": optional(POS_INT),
        "evaluate_every": POS_INT, "max_iterations": optional(POS_INT), "seed": SEED,
        "validation_data": ANY, "on_evaluate": ANY,
        "record_loss": choice("before_update", "after_update"), "checkpoint_dir": ANY,
        "checkpoint_every": ANY, "resume": ANY, "on_nonfinite": ANY,
        "schedule_unit": choice("epoch", "iteration")}),
    "EarlyStopping": (lambda **kw: _trainer(on_evaluate=accel.EarlyStopping(**kw),
                                            validation_data=(X, T), epochs=2).fit(), {},
                      {"metric": choice("val_acc", "train_acc", "test_acc", "val_loss",
                                        "train_loss"),
                       "patience": NONNEG_INT, "min_delta": NONNEG, "restore_best": BOOL}),
    "preprocessing.minibatches": (lambda **kw: preprocessing.minibatches(**kw),
                                  dict(x=X, t=T, batch_size=5),
                                  {"x": ANY, "t": ANY, "batch_size": POS_INT, "seed": ANY,
                                   "min_last": ANY}),
    "trainer.save_checkpoint": (lambda **kw: _trainer().save_checkpoint(**kw),
                                dict(path=None), {"path": ANY}),
    "trainer.load_checkpoint": (lambda **kw: _trainer().load_checkpoint(**kw),
                                dict(path="/nonexistent.npz"), {"path": ANY}),
    "ewma.ewma": (lambda **kw: ewma.ewma(**kw), dict(values=[1.0, 2.0]),
                  {"values": ANY, "beta": UNIT, "bias_correction": BOOL}),
    "ewma.EWMA": (lambda **kw: ewma.EWMA(**{k: v for k, v in kw.items() if k != "x"}).update(
        kw.get("x", 1.0)), {}, {"beta": UNIT, "bias_correction": BOOL, "x": ANY}),
    "gradcheck.numerical_gradient": (lambda **kw: gradcheck.numerical_gradient(**kw),
                                     dict(f=lambda: 0.0, x=np.zeros(3)),
                                     {"f": ANY, "x": ANY, "h": POS}),
    "gradcheck.relative_difference": (lambda **kw: gradcheck.relative_difference(**kw),
                                      dict(g=np.ones(3), g_num=np.ones(3)),
                                      {"g": ANY, "g_num": ANY, "atol": NONNEG}),
    "gradcheck.check_network": (lambda **kw: gradcheck.check_network(**kw),
                                dict(network=MultiLayerNet(4, [3], 3, dtype=np.float64,
                                                           backend="numpy", seed=0),
                                     x=X[:3], t=T[:3]),
                                {"network": ANY, "x": ANY, "t": ANY, "h": POS}),
    "initializers.weight_std": (lambda **kw: initializers.weight_std(**kw),
                                dict(weight_init="he", n_in=4, n_out=3),
                                {"weight_init": ANY, "n_in": POS_INT, "n_out": POS_INT}),
    "datasets.load": (lambda **kw: datasets.load(**kw), dict(name="moons", n_samples=40), {
        "name": ANY, "normalize": BOOL, "flatten": BOOL, "one_hot": BOOL,
        "dtype": FLOAT_DTYPE, "data_dir": ANY, "download": BOOL, "split": ANY,
        "n_samples": ANY, "noise": optional(NONNEG), "test_fraction": ANY, "seed": ANY}),
    "datasets.moons": (lambda **kw: datasets.moons(**kw), dict(n_samples=40),
                       {"n_samples": ANY, "noise": NONNEG, "seed": ANY}),
    "datasets.circles": (lambda **kw: datasets.circles(**kw), dict(n_samples=40),
                         {"n_samples": ANY, "noise": NONNEG, "factor": FRACTION, "seed": ANY}),
    "datasets.spiral": (lambda **kw: datasets.spiral(**kw), dict(n_samples=40),
                        {"n_samples": ANY, "n_classes": ANY, "noise": NONNEG, "seed": ANY}),
    "datasets.load_idx": (lambda **kw: datasets.load_idx(**kw), dict(path=IDX_FILE),
                          {"path": ANY, "sha256": ANY}),
    "preprocessing.Standardizer": (
        lambda **kw: preprocessing.Standardizer(**{k: v for k, v in kw.items() if k != "x"})
        .fit_transform(kw.get("x", X)), {}, {"eps": NONNEG, "x": ANY}),
    "preprocessing.PCAWhitening": (
        lambda **kw: preprocessing.PCAWhitening(**{k: v for k, v in kw.items() if k != "x"})
        .fit_transform(kw.get("x", X)), {},
        {"n_components": lambda v: None if POS_INT(v) else v is None, "eps": NONNEG,
         "zca": BOOL, "x": ANY}),
    "preprocessing.one_hot": (lambda **kw: preprocessing.one_hot(**kw), dict(t=T, n_classes=3),
                              {"t": ANY, "n_classes": ANY, "dtype": NUMERIC_DTYPE}),
    "preprocessing.shuffle": (lambda **kw: preprocessing.shuffle(**kw), dict(x=X, t=T),
                              {"x": ANY, "t": ANY, "seed": ANY}),
    "preprocessing.train_val_split": (lambda **kw: preprocessing.train_val_split(**kw),
                                      dict(x=X, t=T), {"x": ANY, "t": ANY,
                                                       "val_fraction": ANY, "seed": ANY,
                                                       "shuffle": BOOL}),
    "get_backend": (lambda **kw: accel.get_backend(**kw), dict(name="numpy"), {"name": ANY}),
    "to_device": (lambda **kw: accel.to_device(**kw), dict(a=X, backend="numpy"),
                  {"a": ANY, "backend": ANY, "dtype": ANY}),
    "blas_threads": (lambda **kw: accel.blas_threads(**kw), {}, {"n": BLAS_N}),
    "History.from_dict": (lambda **kw: History.from_dict(**kw), dict(d={}), {"d": ANY}),
    "checkpoint.save": (lambda **kw: checkpoint.save(**kw),
                        dict(path=FILES / "state.npz", state={"a": np.ones(2)}, kind="k"),
                        {"path": ANY, "state": ANY}),
    "checkpoint.load": (lambda **kw: checkpoint.load(**kw), dict(path=NET_FILE), {"path": ANY}),
    "initializers.init_weight": (lambda **kw: initializers.init_weight(**kw),
                                 dict(rng=np.random.default_rng(0), weight_init="he", n_in=4,
                                      n_out=3, dtype=np.float32),
                                 {"rng": ANY, "weight_init": ANY, "n_in": SIZE, "n_out": SIZE,
                                  "dtype": FLOAT_DTYPE}),
    "gradcheck.verdict": (lambda **kw: gradcheck.verdict(**kw), dict(diff=1e-9),
                          {"diff": lambda v: None if isinstance(v, (float, np.floating))
                           and not math.isfinite(v) else NONNEG(v)}),
    "datasets.search_dirs": (lambda **kw: datasets.search_dirs(**kw), dict(name="mnist"),
                             {"name": ANY, "data_dir": ANY}),
    "datasets.cache_dir": (lambda **kw: datasets.cache_dir(**kw), {}, {"name": ANY}),
    "synchronize": (lambda **kw: accel.backend.synchronize(**kw), {}, {"backend": ANY}),
}

# names a message may use for an argument instead of its own
ALIASES = {"W": ("W", "b"), "b": ("W", "b"), "gamma": ("gamma", "beta"),
           "beta": ("gamma", "beta"), "g": ("g", "g_num"), "g_num": ("g", "g_num"),
           "network": ("network", "gradient checking"),
           "params": ("params", "grads"), "grads": ("params", "grads"),
           "name": ("name", "dataset", "backend", "optimizer"),
           "state": ("state", "array", "saved network"),
           "state_dict": ("state_dict",), "d": ("History.from_dict", "d must"),
           "n_classes": ("n_classes", "class id")}
# errors an argument may raise besides TypeError/ValueError (a path that is not there)
ALSO = {"path": (FileNotFoundError, IsADirectoryError, PermissionError),
        "data_dir": (FileNotFoundError,), "resume": (FileNotFoundError,),
        "checkpoint_dir": (NotADirectoryError,), "backend": (RuntimeError,),
        "name": (RuntimeError,)}


def _plain(v):
    return v is None or isinstance(v, (bool, int, float, str, np.generic))


SHOWS_VALUE_EXEMPT = (ANY, FLOAT_DTYPE, NUMERIC_DTYPE)  # arrays, paths, objects, dtypes

def judge(entry, name, value):
    """Call the entry point with ``name=value`` (the rest good) and check the outcome."""
    make, good, accepts = SPECS[entry]
    want = accepts[name](value) if accepts[name] else None
    kwargs = {**good, name: value}
    allowed = (TypeError, ValueError, *ALSO.get(name, ()))
    try:
        make(**kwargs)
    except allowed as exc:
        msg = str(exc)
        assert want is not True, f"{entry}({name}={value!r}) refused a good value: {msg}"
        names = ALIASES.get(name, (name,))
        if isinstance(exc, (FileNotFoundError, datasets.CorruptFileError, CheckpointError)) \
                and isinstance(value, (str, os.PathLike)):
            names = (*names, str(value), repr(value))  # or names the file
        assert any(n in msg for n in names), \
            f"{entry}({name}={value!r}) raised {type(exc).__name__} not naming {name}: {msg}"
        if _plain(value) and accepts[name] not in SHOWS_VALUE_EXEMPT:
            shown = {repr(value), str(value), repr(value).replace("np.float64(", "")}
            assert any(s in msg for s in shown) or (value == "" and "''" in msg), \
                f"{entry}({name}={value!r}): the message does not show the value: {msg}"
        return "refused"
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{entry}({name}={value!r}) raised {type(exc).__name__}: {exc}"[:2000])
    assert want is not False, f"{entry}({name}={value!r}) accepted a bad value"
    return "accepted"


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
@pytest.mark.parametrize("entry", sorted(SPECS))
@FUZZ
@given(data=st.data())
def test_every_entry_point_refuses_bad_arguments_by_name(entry, data, tmp_path_factory):
    accepts = SPECS[entry][2]
    name = data.draw(st.sampled_from(sorted(accepts)), label="argument")
    value = data.draw(VALUES, label="value")
    if name in ("path", "checkpoint_dir", "data_dir", "resume") and isinstance(
            value, (str, os.PathLike)):  # only ever inside a temporary folder
        value = str(tmp_path_factory.mktemp("p") / (str(value).lstrip("/") or "f"))
    judge(entry, name, value)


# -- accel.search (Optuna is optional: these skip without it)


def _search_specs():
    optuna = pytest.importorskip("optuna")
    from accel import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": search.log_uniform(1e-6, 1e-2)}
    frozen = [optuna.trial.create_trial(params={"lr": 1e-3}, distributions=space, value=0.5)]

    def trial():
        return optuna.create_study().ask()

    def objective(params, trial):
        return 0.5

    def call(fn, **fixed):
        def run(**kw):
            if "trial" in kw and kw["trial"] is None and "trial" in fixed:
                kw["trial"] = None
            return fn(**{**{k: v() if callable(v) and k == "trial" else v
                            for k, v in fixed.items()}, **kw})
        return run

    study_kw = {"objective": ANY, "space": ANY, "n_trials": POS_INT, "study_name": ANY,
                "storage_url": ANY, "sampler_name": choice(*search.SAMPLERS), "seed": SEED,
                "pruner_name": ANY, "pruner_kwargs": ANY,
                "workers": lambda v: None if POS_INT(v) and v > 1 else POS_INT(v),
                "heartbeat_interval": POS_INT, "grace_period": optional(POS_INT),
                "blas_threads": lambda v: True if v is None else BLAS_N(v), "poll": POS,
                "attrs": ANY, "max_failed": optional(NONNEG_INT)}
    return {
        "search.log_uniform": (search.log_uniform, dict(low=1e-6, high=1e-2),
                               {"low": ANY, "high": ANY}),
        "search.uniform": (search.uniform, dict(low=0.0, high=1.0), {"low": ANY, "high": ANY}),
        "search.sampler": (search.sampler, {}, {"name": choice(*search.SAMPLERS),
                                                "seed": SEED}),
        "search.pruner": (search.pruner, {}, {
            "name": lambda v: True if v is None else choice(*search.PRUNERS)(v),
            "epochs": optional(POS_INT), "startup_trials": NONNEG_INT,
            "warmup_epochs": NONNEG_INT}),
        "search.storage": (search.storage, {}, {
            "url": lambda v: True if v is None else None, "heartbeat_interval": POS_INT,
            "grace_period": optional(POS_INT), "max_retry": optional(NONNEG_INT)}),
        "search.pruning_hook": (call(search.pruning_hook, trial=trial), {}, {
            "trial": ANY, "metric": choice(*search.METRICS), "keep": ANY}),
        "search.suggest": (call(search.suggest, trial=trial), dict(space=space),
                           {"trial": ANY, "space": ANY}),
        "search.rank": (search.rank, dict(trials=frozen), {"trials": ANY, "maximize": BOOL}),
        "search.narrow": (search.narrow, dict(space=space, trials=frozen, top=1), {
            "space": ANY, "trials": ANY, "top": POS_INT, "maximize": BOOL,
            "margin": NONNEG}),
        "search.run_study": (search.run_study, dict(objective=objective, space=space,
                                                    n_trials=1), study_kw),
        "search.random_search": (search.random_search, dict(objective=objective, n_trials=2), {
            **{k: v for k, v in study_kw.items() if k not in ("space", "direction")},
            "space": ANY, "narrow_top": ANY, "rounds": ANY, "margin": NONNEG,
            "maximize": BOOL}),
        "search.trial_seed": (search.trial_seed, dict(seed=0, number=3), {
            "seed": SEED, "number": NONNEG_INT, "purpose": lambda v: isinstance(v, str)}),
        "search.epochs_run": (search.epochs_run, dict(trial=frozen[0]), {"trial": ANY}),
        "search.space_entry": (search.space_entry, dict(d=space["lr"]), {"d": ANY}),
    }


SEARCH_ENTRIES = ["search.log_uniform", "search.uniform", "search.sampler", "search.pruner",
                  "search.storage", "search.pruning_hook", "search.suggest", "search.rank",
                  "search.narrow", "search.run_study", "search.random_search",
                  "search.trial_seed", "search.epochs_run", "search.space_entry"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
@pytest.mark.parametrize("entry", SEARCH_ENTRIES)
@FUZZ
@given(data=st.data())
def test_every_search_entry_point_refuses_bad_arguments_by_name(entry, data):
    if entry not in SPECS:
        SPECS.update(_search_specs())
    accepts = SPECS[entry][2]
    name = data.draw(st.sampled_from(sorted(accepts)), label="argument")
    value = data.draw(VALUES, label="value")
    if name in ("n_trials", "workers", "rounds", "narrow_top", "max_failed") and \
            _int(value) and value > 5:
        value = 5  # accepted values run that many trials or processes: keep it small
    judge(entry, name, value)


# -- the sample the issue lists, one by one


def test_the_optimizer_class_instead_of_an_instance():
    with pytest.raises(TypeError, match=r"optimizer must have an update\(params, grads\) method "
                                        r"\(an instance such as optim.Adam\(lr=1e-3\)\), got "
                                        r"<class 'accel.optim.Adam'>"):
        Trainer(_net(), optim.Adam, X, T)


def test_dtype_none_is_not_float64():
    with pytest.raises(TypeError, match="dtype=None is not a dtype"):
        MultiLayerNet(4, [5], 3, dtype=None)
    with pytest.raises(TypeError, match="dtype=None is not a dtype"):
        datasets.load("moons", dtype=None)


@pytest.mark.parametrize("seed, exc, match", [
    (-1, ValueError, "seed must be None or an int >= 0, got -1"),
    (1.7, TypeError, "seed must be None or an int >= 0, got 1.7"),
    (True, TypeError, "seed must be None or an int >= 0, got True")])
def test_sampler_seeds(seed, exc, match):
    search = pytest.importorskip("accel.search")
    with pytest.raises(exc, match=match):
        search.sampler("random", seed=seed)


def test_hyperband_with_no_epochs():
    search = pytest.importorskip("accel.search")
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        search.pruner("hyperband", epochs=0)


def test_storage_urls(tmp_path):
    search = pytest.importorskip("accel.search")
    with pytest.raises(TypeError, match="storage url must be a string .*got 5"):
        search.storage(5)
    with pytest.raises(ValueError, match="storage url='not a url' is not a database URL"):
        search.storage("not a url")
    with pytest.raises(ValueError, match="SQLite or PostgreSQL, not 'mysql'"):
        search.storage("mysql://u@localhost/db")
    with pytest.raises(ValueError, match=f"the folder '{tmp_path}/missing' does not exist"):
        search.storage(f"sqlite:///{tmp_path}/missing/search.db")
    assert not (tmp_path / "missing").exists()


def test_checkpoint_dir_of_the_wrong_kind():
    with pytest.raises(TypeError, match="checkpoint_dir must be a path .*got 123"):
        Trainer(_net(), optim.SGD(0.1), X, T, checkpoint_dir=123)


def test_labels_none():
    net = _net()
    for call in (lambda: net.loss(X, None), lambda: net.accuracy(X, None),
                 lambda: net.gradient(X, None)):
        with pytest.raises(TypeError, match="t must be the labels .*got None"):
            call()
    with pytest.raises(TypeError, match="t_train must be the training labels, got None"):
        Trainer(net, optim.SGD(0.1), X, None)
    with pytest.raises(TypeError, match="validation_data must be a pair"):
        Trainer(net, optim.SGD(0.1), X, T, validation_data=(X, None))


@pytest.mark.parametrize("dtype", [bool, np.int64, np.float64])
def test_one_hot_labels_of_any_number_type_train_as_class_ids(dtype):
    onehot = np.eye(3, dtype=dtype)[T]
    runs = []
    for t in (T, onehot):
        net = _net()
        Trainer(net, optim.Adam(0.01), X, t, epochs=2, batch_size=4, seed=0,
                verbose=False).fit()
        runs.append(net.params.flat.copy())
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6, atol=1e-7)
    x, t = _net().prepare(X, onehot)
    assert t.dtype == np.float32


def test_a_schedule_that_reaches_lr_0_names_itself_and_the_epoch():
    decay = schedules.StepDecay(1e-3, step=1, factor=1e-200)
    tr = Trainer(_net(), optim.SGD(0.1), X, T, epochs=4, schedule=decay, verbose=False)
    with pytest.raises(ValueError, match=r"schedule StepDecay\(lr0=0.001, step=1, "
                                         r"factor=1e-200\) at epoch 2: .* gives lr = 0.0 at "
                                         r"t = 2: an lr must be a positive"):
        tr.fit()
    with pytest.raises(ValueError, match=r"ExponentialDecay.* gives lr = inf at t = 3"):
        schedules.ExponentialDecay(0.1, base=1e300)(3)


def test_a_float32_checkpoint_resumed_into_a_float64_network_names_the_dtype(tmp_path):
    Trainer(_net(), optim.SGD(0.1), X, T, epochs=1, verbose=False,
            checkpoint_dir=tmp_path).fit()
    wide = MultiLayerNet(4, [5], 3, backend="numpy", seed=0, dtype=np.float64)
    tr = Trainer(wide, optim.SGD(0.1), X, T, epochs=2, verbose=False,
                 resume=tmp_path / "last.npz")
    with pytest.raises(CheckpointError, match=r"differs from this one in dtype \(saved "
                                              r"'float32', here 'float64'\)") as info:
        tr.fit()
    assert "other training data" not in str(info.value)


def test_a_read_only_parameter_is_refused_before_the_step_counts():
    p = np.ones(5, np.float32)
    p.setflags(write=False)
    opt = optim.Adam()
    with pytest.raises(ValueError, match=r"params\['w'\] is read-only"):
        opt.update({"w": p}, {"w": np.ones(5, np.float32)})
    assert opt.t == 0 and opt.state == {}


# -- a refused call changes nothing


def _bad_grads(grads, kind, value):
    bad = dict(grads)
    if kind == "replace":
        bad["W1"] = value
    elif kind == "drop":
        del bad["W1"]
    elif kind == "extra":
        bad["W9"] = np.ones(3, np.float32)
    elif kind == "shape":
        bad["b1"] = np.ones(7, np.float32)
    elif kind == "dtype":
        bad["b1"] = grads["b1"].astype(np.float64)
    return bad


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@FUZZ
@given(cls=st.sampled_from(sorted(optim.OPTIMIZERS.values(), key=lambda c: c.__name__)),
       kind=st.sampled_from(["replace", "drop", "extra", "shape", "dtype"]), value=VALUES)
def test_a_refused_update_changes_nothing(cls, kind, value):
    net = _net()
    opt = cls(lr=0.1)
    x, t = net.prepare(X, T)
    opt.update(net.params, net.loss_and_grads(x, t)[1])  # some state to keep
    grads = {k: v.copy() for k, v in net.loss_and_grads(x, t)[1].items()}
    params = net.params.flat.copy()
    state = {k: [a.copy() for a in v] for k, v in opt.state.items()}
    steps = opt.t
    try:
        opt.update(dict(net.params), _bad_grads(grads, kind, value))
    except (TypeError, ValueError) as exc:
        assert "params" in str(exc) or "grads" in str(exc)
        np.testing.assert_array_equal(net.params.flat, params)
        assert opt.t == steps and opt.state.keys() == state.keys()
        for k, v in state.items():
            for a, b in zip(opt.state[k], v):
                np.testing.assert_array_equal(a, b)
    else:
        assert kind == "replace"  # a good enough W1 gradient may be taken


@FUZZ
@given(section=st.sampled_from(["config", "params", "bn1", "rng"]),
       key=st.sampled_from(["W1", "b2", "dtype", "hidden_sizes", "running_mean"]), value=VALUES)
def test_a_refused_load_state_dict_changes_nothing(section, key, value):
    net = MultiLayerNet(4, [5], 3, batchnorm=True, dropout=0.1, backend="numpy", seed=0)
    other = MultiLayerNet(4, [5], 3, batchnorm=True, dropout=0.1, backend="numpy", seed=1)
    state = other.state_dict()
    state[section] = dict(state[section] or {}, **{key: value})
    params, buffers = net.params.flat.copy(), net.buffers.flat.copy()
    try:
        net.load_state_dict(state)
    except (TypeError, ValueError):
        np.testing.assert_array_equal(net.params.flat, params)
        np.testing.assert_array_equal(net.buffers.flat, buffers)
