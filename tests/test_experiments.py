"""The chapter-6 experiment scripts: each one with --quick on NumPy writes its PNG and its
JSON with the agreed keys, and the cheap ones reproduce the book's outcome in numbers."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
KEYS = {"experiment", "config", "backend", "dataset", "results", "elapsed_s"}
HAVE_FASHION = (DATA_DIR / "fashion-mnist").is_dir()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason=f"Fashion-MNIST not found under {DATA_DIR} (set ACCEL_DATA_DIR)")

IMAGE_SCRIPTS = ("compare_optimizers", "compare_initializers", "batchnorm_compare",
                 "overfitting", "hyperparameter_search", "gradient_check")
SPEED_SCRIPTS = ("speed/adam_roofline", "speed/batchnorm_roofline", "speed/mlp_step",
                 "speed/compile_time", "speed/bn_rounds", "speed/clip_cost",
                 "speed/step_overhead", "speed/thread_policy", "speed/search_efficiency")
ALL_SCRIPTS = ("optimizer_paths", "activation_histograms", "compare_initializers",
               "compare_optimizers", "batchnorm_compare", "overfitting",
               "hyperparameter_search", "lr_decay", "gradient_check", "run_all",
               "book_differences", "gpu_check", *SPEED_SCRIPTS)
SEARCH_SCRIPTS = ("hyperparameter_search", "speed/search_efficiency")  # they need optuna
SYNTHETIC = ("optimizer_paths", "activation_histograms")


def run_script(name, *args, out, env_extra=None, check=True):
    if name in SEARCH_SCRIPTS:
        pytest.importorskip("optuna")  # the search's engine (not on a GPU machine)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               ACCEL_DATA_DIR=str(DATA_DIR), MPLBACKEND="Agg")
    env.update(env_extra or {})
    cmd = [sys.executable, str(BENCH / f"{name}.py"), "--backend", "numpy", "--out", str(out),
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


_cache, _stderr = {}, {}


def quick(name, tmp_path_factory):
    """Run ``name --quick`` once per session; (record, stdout, out folder)."""
    if name not in _cache:
        out = tmp_path_factory.mktemp(name)
        args = ["--quick"]
        if name in IMAGE_SCRIPTS:
            args += ["--dataset", "fashion-mnist"]
        proc = run_script(name, *args, out=out)
        record = json.loads((out / f"{name}.json").read_text())
        _cache[name] = (record, proc.stdout, out)
        _stderr[name] = proc.stderr
    return _cache[name]


def check_files(name, record, stdout, out):
    png = out / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert KEYS <= record.keys()
    assert record["experiment"] == name
    assert record["backend"] == "numpy"
    assert record["config"]["quick"] is True
    assert record["elapsed_s"] > 0
    assert record["results"]
    for label, series in record["results"].items():
        assert "final" in series, label
    assert "backend: numpy" in stdout and "kernel path:" in stdout and "dataset:" in stdout


@pytest.mark.parametrize("name", SYNTHETIC + ("lr_decay",))
def test_script_writes_png_and_json(name, tmp_path_factory):
    check_files(name, *quick(name, tmp_path_factory))


@needs_fashion
@pytest.mark.parametrize("name", IMAGE_SCRIPTS)
def test_image_script_writes_png_and_json(name, tmp_path_factory):
    record, stdout, out = quick(name, tmp_path_factory)
    check_files(name, record, stdout, out)
    assert record["dataset"] == "fashion-mnist"


# -- outcomes


def test_optimizer_paths_outcome(tmp_path_factory):
    r = quick("optimizer_paths", tmp_path_factory)[0]["results"]
    f0 = 7.0 ** 2 / 20 + 2.0 ** 2
    assert set(r) == {"SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"}
    for label, s in r.items():
        assert len(s["x"]) == len(s["y"]) == 31
        assert (s["x"][0], s["y"][0]) == (-7.0, 2.0)
        assert s["final"]["f"] < 0.05 * f0, label  # every one gets near the minimum
    # SGD zig-zags across the valley: y changes sign at every step
    ys = r["SGD"]["y"][:10]
    assert all(a * b < 0 for a, b in zip(ys, ys[1:]))
    # AdaGrad's per-coordinate steps go straight in: closer than SGD at the end, and |y| ≈ 0
    assert r["AdaGrad"]["final"]["distance"] < r["SGD"]["final"]["distance"]
    assert abs(r["AdaGrad"]["final"]["y"]) < 1e-6


def test_activation_histograms_outcome(tmp_path_factory):
    r = quick("activation_histograms", tmp_path_factory)[0]["results"]
    f = {k: v["final"] for k, v in r.items()}
    assert len(r) == 12
    assert all(len(v["layers"]) == 5 and len(v["hist_counts"]) == 5 for v in r.values())
    # sigmoid, std 1: activations pile up at 0 and 1 (vanishing gradients)
    assert f["sigmoid / std=1"]["last_saturated"] > 0.4
    # sigmoid, std 0.01: all near 0.5 (no expressive power)
    assert f["sigmoid / std=0.01"]["last_std"] < 0.02
    assert abs(f["sigmoid / std=0.01"]["last_mean"] - 0.5) < 0.01
    # Xavier keeps sigmoid spread out and unsaturated
    assert 0.05 < f["sigmoid / Xavier"]["last_std"] < 0.3
    assert f["sigmoid / Xavier"]["last_saturated"] < 0.01
    # ReLU: std 0.01 vanishes, std 1 explodes, He keeps the scale layer after layer
    assert f["relu / std=0.01"]["std_ratio_last_first"] < 1e-3
    assert f["relu / std=1"]["std_ratio_last_first"] > 1e2
    assert 0.5 < f["relu / He"]["std_ratio_last_first"] < 2.0
    assert f["relu / Xavier"]["std_ratio_last_first"] < 0.5  # Xavier shrinks under ReLU


@needs_fashion
def test_compare_initializers_outcome(tmp_path_factory):
    record = quick("compare_initializers", tmp_path_factory)[0]
    assert record["config"]["iterations"] >= 300
    f = {k: v["final"] for k, v in record["results"].items()}
    # std 0.01 does not learn: the loss stays at ln 10
    assert abs(f["std=0.01"]["loss_last100_mean"] - math.log(10)) < 0.02
    # He learns faster than Xavier, and both learn
    assert f["He"]["loss_last100_mean"] < f["Xavier"]["loss_last100_mean"] < 2.0
    assert f["He"]["test_acc"] > f["Xavier"]["test_acc"] > 0.3 > f["std=0.01"]["test_acc"]
    assert all(len(v["train_loss"]) == record["config"]["iterations"]
               for v in record["results"].values())


@needs_fashion
def test_compare_optimizers_outcome(tmp_path_factory):
    record = quick("compare_optimizers", tmp_path_factory)[0]
    r = record["results"]
    assert set(r) == {"SGD", "Momentum", "AdaGrad", "RMSProp", "Adam"}
    loss = {k: v["final"]["loss_last100_mean"] for k, v in r.items()}
    assert max(loss, key=loss.get) == "SGD"  # SGD is the slowest
    assert loss["Adam"] < loss["SGD"] - 0.2
    # the losses the plot's y axis cuts are counted (and marked on the plot), never silent
    top = 1.2 * math.log(10)
    for v in r.values():
        cut = sum(x is None or x > top for x in v["train_loss"])
        assert v["final"]["losses_above_axis"] == cut
    assert r["RMSProp"]["final"]["losses_above_axis"] > 0
    # one loss number, named the same where it is printed and where it is ranked
    stdout = quick("compare_optimizers", tmp_path_factory)[1]
    assert "mean loss of the last 100 it. 0." in stdout
    assert "ranking (mean loss of the last 100 it., lowest first)" in stdout
    assert "loss_smoothed" not in stdout


def test_compare_optimizers_says_when_the_accuracies_cannot_separate_them():
    import importlib
    sys.path.insert(0, str(BENCH))
    try:
        co = importlib.import_module("compare_optimizers")
    finally:
        sys.path.remove(str(BENCH))
    note = co.same_accuracy_note([0.9944, 0.9944, 0.9944, 0.9944, 0.9944], "spiral")
    assert "0.994 on spiral" in note and "too easy" in note and "0.994–" not in note
    assert "0.985–0.994" in co.same_accuracy_note([0.9944, 0.985], "spiral")
    assert co.same_accuracy_note([0.9944, 0.62, 0.99], "spiral") is None


@needs_fashion
def test_batchnorm_compare_counts_the_overflow_instead_of_warning(tmp_path_factory):
    record = quick("batchnorm_compare", tmp_path_factory)[0]
    assert "overflow encountered" not in _stderr["batchnorm_compare"]
    f = {k: v["final"] for k, v in record["results"].items()}
    assert f["std=1 / no BatchNorm"]["overflowed"] is True  # activations past float32
    assert not any(v["overflowed"] for k, v in f.items() if "std=1 " not in k)
    assert record["summary"]["no-BatchNorm runs that overflowed float32 (std)"] == "1"


@needs_fashion
def test_overfitting_early_stopping_restores_the_best_epoch(tmp_path_factory):
    record = quick("overfitting", tmp_path_factory)[0]
    r = record["results"]["early stopping (patience 2)"]
    f = r["final"]
    assert f["stopped_epoch"] is not None and f["best_epoch"] < f["stopped_epoch"]
    assert f["stopped_epoch"] - f["best_epoch"] == 2  # patience evaluations without a better
    assert r["epoch"][-1] == f["stopped_epoch"] < record["config"]["epochs"]
    assert f["best_val_acc"] == max(r["val_acc"]) == r["val_acc"][r["epoch"].index(
        f["best_epoch"])]
    assert "early stopping" in r["stop_reason"]


@needs_fashion
def test_gradient_check_outcome(tmp_path_factory):
    record = quick("gradient_check", tmp_path_factory)[0]
    theta = record["results"]["theta"]["final"]
    assert theta["relative_difference"] < 1e-7 and theta["verdict"] == "fine"
    assert {"W1", "gamma1", "beta1"} <= set(record["results"])
    assert record["config"]["batchnorm"] and record["config"]["weight_decay"] > 0


@needs_fashion
def test_hyperparameter_search_ranking(tmp_path_factory):
    record = quick("hyperparameter_search", tmp_path_factory)[0]
    r = record["results"]
    n = record["config"]["trials"]
    assert list(r) == [f"Best-{i + 1}" for i in range(n)]
    scores = [v["final"]["val_acc"] for v in r.values()]
    assert scores == sorted(scores, reverse=True)
    for i, v in enumerate(r.values()):
        assert 1e-6 <= v["lr"] <= 1e-2 and 1e-8 <= v["weight_decay"] <= 1e-4
        if i < record["config"]["show"]:
            assert len(v["val_acc"]) == record["config"]["epochs"] + 1


def test_lr_decay_outcome(tmp_path_factory):
    record = quick("lr_decay", tmp_path_factory)[0]
    assert record["dataset"] == "moons"
    f = {k: v["final"] for k, v in record["results"].items()}
    assert len(f) == 18 and record["config"]["output"] == "sigmoid"
    # exponential decay ends far below lr0; without decay lr stays at the course's 0.0007
    assert f["GD / exponential"]["lr"] < 0.1 * 0.95 ** 70
    assert f["GD / no decay"]["lr"] == pytest.approx(7e-4)
    # per iteration: lr0/√i at the last step i (80 epochs of 4 mini-batches: i = 319),
    # per epoch lr0/√79 (its last epoch)
    assert f["GD / inverse-sqrt per iteration"]["lr"] == pytest.approx(0.1 / math.sqrt(319))
    assert f["GD / inverse-sqrt"]["lr"] == pytest.approx(0.1 / math.sqrt(79))
    # lr0 0.1 with staircase decay learns the moons far better than lr 0.0007 without decay
    assert f["GD / staircase"]["train_acc"] > f["GD / no decay"]["train_acc"] + 0.2


# -- plumbing


def test_missing_mnist_says_so(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    proc = run_script("compare_optimizers", "--quick", "--dataset", "mnist", "--offline",
                      "--data-dir", str(empty), out=tmp_path / "out", check=False,
                      env_extra={"ACCEL_DATA_DIR": str(empty),
                                 "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in proc.stderr  # one line
    line = error[0]
    assert line.startswith("compare_optimizers.py: error: dataset 'mnist' not found")
    assert f"--data-dir {empty}" in line and "--offline" in line
    assert "ACCEL_DATA_DIR" in line and "--dataset fashion-mnist" in line
    assert "download=" not in line and "data_dir=" not in line  # no Python-API advice
    assert not (tmp_path / "out" / "compare_optimizers.json").exists()


# -- a person at the command line: errors, Ctrl-C, --help


def _one_error_line(proc, prog):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_user_errors_are_one_line_naming_the_flag(tmp_path):
    line = _one_error_line(run_script("compare_optimizers", "--iterations", "0", out=tmp_path,
                                      check=False), "compare_optimizers.py")
    assert "--iterations" in line and ">= 1" in line
    line = _one_error_line(run_script("lr_decay", "--dataset", "spiral", out=tmp_path,
                                      check=False), "lr_decay.py")
    assert "--dataset" in line and "'spiral'" in line
    # a study run with other settings: the flags that continue it, the one that starts anew
    args = ("--quick", "--dataset", "spiral", "--trials", "2")
    run_script("hyperparameter_search", *args, "--epochs", "2", out=tmp_path)
    line = _one_error_line(run_script("hyperparameter_search", *args, "--epochs", "3",
                                      out=tmp_path, check=False), "hyperparameter_search.py")
    assert "was run with --epochs 2 (this run: --epochs 3)" in line
    assert "--study-name" in line and "pass another study name" not in line
    line = _one_error_line(run_script("hyperparameter_search", *args, "--storage", "nonsense",
                                      out=tmp_path, check=False), "hyperparameter_search.py")
    assert line.startswith("hyperparameter_search.py: error: --storage nonsense: ")


@needs_fashion
def test_ctrl_c_in_compare_optimizers_keeps_what_finished(tmp_path):
    import signal

    env = dict(os.environ, OMP_NUM_THREADS="1", ACCEL_DATA_DIR=str(DATA_DIR), MPLBACKEND="Agg")
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "compare_optimizers.py"), "--backend", "numpy", "--quick",
         "--dataset", "fashion-mnist", "--out", str(tmp_path)], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "[2/5]" in line:  # two optimizers done: interrupt the third
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint_dir" not in err
    record = json.loads((tmp_path / "compare_optimizers.json").read_text())
    done = list(record["results"])
    assert done[:2] == ["SGD", "Momentum"] and len(done) < 5
    assert record["interrupted"] == ["SGD", "Momentum", "AdaGrad", "RMSProp", "Adam"][len(done)]
    assert all(len(v["train_loss"]) == record["config"]["iterations"]
               for v in record["results"].values())  # only whole series
    assert (tmp_path / "compare_optimizers.png").exists()
    assert f"interrupted during {record['interrupted']}" in err


def _parser_of(name):
    """The ArgumentParser ``name``'s main() builds (``name``: its path under benchmarks/, no
    .py), and its --help text."""
    import argparse
    import contextlib
    import importlib
    import io

    made = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, *a, **kw):
        made.append(self)
        return real(self, *a, **kw)

    folder = str((BENCH / name).parent)
    sys.path.insert(0, folder)
    argparse.ArgumentParser.parse_args = capture
    text = io.StringIO()
    try:
        module = importlib.import_module(Path(name).name)
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            module.main(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
        sys.path.remove(folder)
    return module, made[0], text.getvalue()


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_help_is_whole_and_right(name):
    pytest.importorskip("matplotlib")
    if name in SEARCH_SCRIPTS:
        pytest.importorskip("optuna")
    module, parser, text = _parser_of(name)
    # the description is whole: the docstring's first paragraph or its whole first sentence
    first = " ".join(module.__doc__.strip().split("\n\n")[0].split())
    desc = " ".join(parser.description.split())
    assert first.startswith(desc) and desc.endswith((".", "?", ")")), desc
    # every option says what it is, and its default at most once
    for action in parser._actions:
        if action.option_strings and action.help != "==SUPPRESS==":
            assert action.help, f"{action.option_strings} has no help"
    assert "(default: None)" not in text and "(default: False)" not in text
    options = text[text.index("options:"):]
    for block in re.split(r"\n(?=  -)", options):
        assert block.count("default") <= 1, block
    if name == "lr_decay":  # generated data only: no image-data options
        assert "--data-dir" not in text and "--offline" not in text
        assert "spiral" not in text  # two classes: one sigmoid unit


def test_help_shows_the_real_defaults():
    pytest.importorskip("optuna")
    pytest.importorskip("matplotlib")
    _, _, text = _parser_of("overfitting")
    assert "epochs per variant (default: 201; 8 with --quick)" in " ".join(text.split())
    _, _, text = _parser_of("hyperparameter_search")
    flat = " ".join(text.split())
    for shown in ("(default: 100; 6 with --quick)", "(default: 50; 4 with --quick)",
                  "random (the book's) or tpe (default: random)", "(default: none)"):
        assert shown in flat


def test_hyperparameter_search_workers_and_narrow(tmp_path):
    out = tmp_path / "out"
    run_script("hyperparameter_search", "--quick", "--dataset", "spiral", "--trials", "4",
               "--epochs", "2", "--narrow", "2", "--workers", "2", out=out)
    record = json.loads((out / "hyperparameter_search.json").read_text())
    assert record["config"]["rounds"] == 2 and record["config"]["workers"] == 2
    assert len(record["results"]) == 8
    spaces = record["search"]["spaces"]
    assert len(spaces) == 2
    assert spaces[1]["lr"]["low"] >= spaces[0]["lr"]["low"]
    assert spaces[1]["lr"]["high"] <= spaces[0]["lr"]["high"]
    round2 = [v for v in record["results"].values() if v["round"] == 1]
    assert all(spaces[1]["lr"]["low"] <= v["lr"] <= spaces[1]["lr"]["high"] for v in round2)
    # round 2 spans exactly the best 2 of round 1
    best2 = [v for v in record["results"].values() if v["round"] == 0][:2]
    assert spaces[1]["lr"]["low"] == min(v["lr"] for v in best2)
    assert spaces[1]["lr"]["high"] == max(v["lr"] for v in best2)
    assert {v["state"] for v in record["results"].values()} == {"complete"}
    assert all(v["worker"] and v["epochs"] == 2 for v in record["results"].values())
    assert len(record["search"]["studies"]) == 2
    # the study lives in <out>/hyperparameter_search.db: the same command again continues it
    assert (out / "hyperparameter_search.db").is_file()
    run_script("hyperparameter_search", "--quick", "--dataset", "spiral", "--trials", "4",
               "--epochs", "2", "--narrow", "2", out=out)
    again = json.loads((out / "hyperparameter_search.json").read_text())
    assert again["search"]["ranking"] == record["search"]["ranking"]
    assert {k: v["final"] for k, v in again["results"].items()} == \
        {k: v["final"] for k, v in record["results"].items()}


def test_run_all_index(tmp_path):
    out = tmp_path / "out"
    run_script("run_all", "--quick", "--only", "optimizer_paths,activation_histograms",
               out=out)
    index = (out / "index.md").read_text()
    for name in ("optimizer_paths", "activation_histograms"):
        assert f"![{name}]({name}.png)" in index
        assert f"python benchmarks/{name}.py" in index
        assert (out / f"{name}.json").exists()
    record = json.loads((out / "run_all.json").read_text())
    assert KEYS <= record.keys()
    assert set(record["results"]) == {"optimizer_paths", "activation_histograms"}
    assert (out / "run_all.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@needs_fashion
def test_run_all_quick_everything(tmp_path):
    out = tmp_path / "out"
    run_script("run_all", "--quick", "--dataset", "fashion-mnist", out=out)
    record = json.loads((out / "run_all.json").read_text())
    assert record["config"]["failed"] == []
    for name in record["config"]["experiments"]:
        assert (out / f"{name}.png").exists() and (out / f"{name}.json").exists()


def test_titles_name_the_real_layer_sizes(tmp_path):
    """A generated dataset has 2 inputs and its own number of classes: the titles say so."""
    run_script("compare_optimizers", "--quick", "--dataset", "spiral", out=tmp_path)
    record = json.loads((tmp_path / "compare_optimizers.json").read_text())
    assert record["figure_title"].startswith("spiral: 2-100×4-3 relu"), record["figure_title"]


@needs_fashion
def test_book_differences_measures_each_documented_difference(tmp_path):
    run_script("book_differences", "--quick", "--dataset", "fashion-mnist", out=tmp_path)
    r = json.loads((tmp_path / "book_differences.json").read_text())["results"]
    lf = r["loss_form"]
    assert max(lf["book"]) <= -math.log(1e-7) + 1e-3  # the book's form caps a loss at 16.1
    assert lf["final"]["median_abs_diff"] < 1e-4  # and agrees elsewhere
    assert len(r["recorded_loss"]["SGD/after_update"]) == 150
    assert len(r["bn_running_var"]["train_acc_init0"]) == 4  # epochs 0..3
    assert r["nesterov"]["final"]["fixed"] == pytest.approx([0.6896, -0.0007], abs=5e-5)
    assert r["nesterov"]["final"]["pre_fix"] == pytest.approx([0.5264, 0.0002], abs=5e-5)
