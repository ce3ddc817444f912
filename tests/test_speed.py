"""The speed scripts of benchmarks/speed/: the timing helper they share, and each measurement's
``--quick`` run: its kernel matches the reference (the script's validate step) and its JSON
holds the rows, with times and ratios that make sense."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "speed"
sys.path.insert(0, str(SPEED))
import timing  # noqa: E402

HAVE_TORCH = timing.torch_missing() is None


# -- timing.py


def test_median_runs_warmup_then_at_least_repeat_timed_calls():
    calls = []
    t = timing.median(lambda: calls.append(1), 7, warmup=3)
    assert len(calls) == 10 and 0 <= t < 0.01


def test_median_keeps_timing_until_min_time_and_takes_the_median():
    durations = iter([0.0] * 2 + [0.002] * 1000)  # warm-up calls, then 2 ms each
    calls = []

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    t = timing.median(fn, 3, min_time=0.05)
    assert len(calls) - 2 >= 0.05 / 0.003  # ~2 ms a call: many more than 3 calls
    assert 0.0019 < t < 0.02


def test_median_syncs_inside_the_timing_or_every_50_calls_outside():
    syncs = []
    timing.median(lambda: None, 10, warmup=2, sync=lambda: syncs.append(1))
    assert len(syncs) == 10 + 2  # after the warm-up, after each timed call, at the end
    slow = timing.median(lambda: None, 5, warmup=0, sync=lambda: time.sleep(0.003))
    assert slow > 0.0025  # the sync's time counts
    syncs.clear()
    host = timing.median(lambda: None, 120, warmup=0, sync=lambda: syncs.append(1) or
                         time.sleep(0.003), host_only=True)
    assert len(syncs) == 1 + 2 + 1 and host < 0.001  # 2 = 120 // 50; outside the timing


def test_median_refuses_no_repeats():
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        timing.median(lambda: None, 0)


def test_spread_and_write_json(tmp_path):
    assert timing.spread([3.0, 1.0, 2.0]) == dict(median=2.0, min=1.0, max=3.0)
    path = timing.write_json(tmp_path / "new", "x", {"meta": timing.machine(0.5, quick=True)})
    meta = json.loads(path.read_text())["meta"]
    assert path.name == "x.json" and meta["quick"] is True and meta["cpus"] == os.cpu_count()
    assert meta["load_before"] == 0.5 and meta["load_after"] >= 0


def test_run_worker_reads_the_last_json_line_or_reports_the_failure(tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import os, sys\nprint('noise')\n"
                      "if sys.argv[1] == 'fail': sys.exit('it broke')\n"
                      "print('{\"x\": ' + os.environ['X'] + '}')\n")
    assert timing.run_worker(script, "ok", env={"X": "3"}) == {"x": 3}
    with pytest.raises(RuntimeError, match="(?s)w.py fail exited 1.*it broke"):
        timing.run_worker(script, "fail")


def test_timing_imports_no_accel():
    code = f"import sys; sys.path.insert(0, {str(SPEED)!r}); import timing; " \
           "print([m for m in sys.modules if m.startswith('accel')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- the measurements, --quick


def quick(name, tmp_path, *args):
    """``name --quick *args`` with --out tmp_path: (its JSON, its stdout)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SPEED / f"{name}.py"), "--quick", "--out",
                           str(tmp_path), *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / f"{name}.json").read_text()), proc.stdout


def test_adam_roofline_quick(tmp_path):
    record, _ = quick("adam_roofline", tmp_path)
    rows = record["rows"]
    assert [(r["op"], r["n"]) for r in rows] == [("adam", 10**4), ("clip_norm", 10**4),
                                                 ("adam", 10**5), ("clip_norm", 10**5)]
    for r in rows:
        assert r["path"] == "cpu" and r["max_rel_error"] <= 1e-5
        assert r["fused_s"] > 0 and r["reference_s"] > 0
        assert r["speedup_vs_reference"] == pytest.approx(r["reference_s"] / r["fused_s"])
        assert ("torch_s" in r) == HAVE_TORCH and r.get("fused_over_torch", 1) > 0
    for r in rows[::2]:
        assert r["fused_GBps"] == pytest.approx(28 * r["n"] / r["fused_s"] / 1e9)
        assert r["fraction_of_roofline"] == pytest.approx(r["roofline_s"] / r["fused_s"])
    assert record["meta"]["quick"] is True and record["meta"]["numba_threads"] >= 1


def test_batchnorm_roofline_quick(tmp_path):
    record, stdout = quick("batchnorm_roofline", tmp_path)
    rows = record["rows"]
    assert [r["shape"] for r in rows] == [[128, 128], [256, 512]]
    for r in rows:
        assert r["path"] == "cpu" and r["max_rel_error"] <= 1e-4
        assert min(r["fused_s"], r["reference_s"], r["roofline_s"], r["two_pass_floor_s"]) > 0
        assert r["fused_over_two_pass_floor"] == pytest.approx(r["fused_s"]
                                                               / r["two_pass_floor_s"])
        assert r["fused_GBps"] == pytest.approx(20 * r["n"] / r["fused_s"] / 1e9)
        assert ("torch_s" in r) == HAVE_TORCH
    assert "256x512" in stdout


def test_the_batchnorm_validation_catches_a_wrong_kernel(monkeypatch):
    import batchnorm_roofline

    from accel import dispatch

    real = dispatch.Site.__call__

    def off(self, *arrays, **kw):  # the fused backward's dx off by 1e-3
        out = real(self, *arrays, **kw)
        return out + 1e-3 if self.reference.__name__ == "batchnorm_backward" else out

    monkeypatch.setattr(dispatch.Site, "__call__", off)
    with pytest.raises(SystemExit, match="do not match the reference at 16x8"):
        batchnorm_roofline.validate(16, 8)


def test_mlp_step_quick(tmp_path):
    record, stdout = quick("mlp_step", tmp_path, "--rounds", "1")
    (row,) = record["rows"]
    assert row["shape"] == [784, 100, 100, 100, 100, 10] and row["n"] == 109810
    assert row["errors"]["loss"] <= 1e-5 and row["errors"]["grads"] <= 1e-5
    assert row["fused_path"] == "cpu" and row["reference_path"] == "reference"
    assert row["fused_s"] > 0 and row["reference_s"] > 0
    if HAVE_TORCH:
        assert len(row["rounds"]["rounds_s"]["torch"]) == 1 and row["fused_over_torch"] > 0
    ops = record["ops_per_step"]
    for key, count in ops.items():
        assert count["total"] > 0, key
        assert sum(count["by_scope"].values()) == count["total"] == sum(count["ops"].values())
    # one fused Adam call for the whole flat buffer; fewer operations fused than reference
    assert ops["plain_fused"]["by_scope"]["optimizer"] == 1
    assert ops["plain_fused"]["total"] < ops["plain_reference"]["total"]
    assert ops["bn_fused"]["total"] < ops["bn_reference"]["total"]
    assert ops["bn_fused"]["by_scope"]["BatchNorm"] == 8  # 4 layers, a kernel each way
    assert "array operations per step" in stdout


def test_compile_time_quick(tmp_path):
    record, _ = quick("compile_time", tmp_path)
    cold, warm = record["rows"]
    assert (cold["cache"], warm["cache"]) == ("cold cache", "warm cache")
    for run in record["runs"]["cold"] + record["runs"]["warm"]:
        assert run["adam_path"] == run["bn_path"] == "cpu" and run["max_abs_error"] <= 1e-5
        assert 0 < run["import_accel_s"] < 30
    # the cold process compiles the batch-norm kernels; the warm one loads them from the cache
    assert warm["first_bn_fwd_bwd_call_s"]["median"] < cold["first_bn_fwd_bwd_call_s"][
        "median"] / 3


# -- the scripts moved here, at their smallest


def run(name, tmp_path, *args):
    proc = subprocess.run([sys.executable, str(SPEED / f"{name}.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_bn_rounds_smallest(tmp_path):
    run("bn_rounds", tmp_path, "--rounds", "1", "--shape", "64", "32", "--reps", "3",
        "--no-torch", "--out", str(tmp_path))
    record = json.loads((tmp_path / "bn_rounds-64x32.json").read_text())
    assert record["meta"]["shape"] == [64, 32] and record["rounds"]["accel"][0]["path"] == "cpu"
    s = record["summary"]
    assert s["reference_over_fused"]["median"] == pytest.approx(
        s["reference"]["median"] / s["fused"]["median"])


def test_clip_cost_and_step_overhead_smallest(tmp_path):
    run("clip_cost", tmp_path, "--n", "1000", "--rounds", "1", "--steps", "3", "--no-torch",
        "--out", str(tmp_path))
    summary = json.loads((tmp_path / "clip_cost.json").read_text())["summary"]
    assert summary["accel"]["median_ms"] > 0 and summary["accel_clip"]["median_ms"] > 0
    run("step_overhead", tmp_path, "--rounds", "1", "--steps", "40", "--no-torch", "--out",
        str(tmp_path))
    record = json.loads((tmp_path / "step_overhead.json").read_text())
    assert record["meta"]["threads"] == 1 and record["summary"]["accel_step"]["median"] > 0
    assert (tmp_path / "step_overhead.png").read_bytes()[:4] == b"\x89PNG"


def test_the_default_out_is_benchmarks_out_wherever_it_runs_from():
    assert timing.OUT == ROOT / "benchmarks" / "out"
