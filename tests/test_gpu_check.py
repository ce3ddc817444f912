"""The one GPU command keeps what ran: a stage that crashes or outlives its limit is recorded
as failed, the stages after it still run, and the JSON is written after every stage.

Run here without a GPU (its environment and compile stages); the crash is a real one: the
kernels' module imported with ``ACCEL_CUDA_JIT=mlir`` where numba-cuda-mlir is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_stage_past_its_limit_is_killed_and_recorded(gpu_check):
    # the compile stage imports Numba and numba.cuda: well over 0.3 s
    res = gpu_check.run_stage("compile", quick=True, limit_s=0.3)
    assert res["stage"]["timed_out"] and not res["stage"]["ok"]
    assert res["stage"]["elapsed_s"] < 10
    assert not gpu_check.stage_ok("compile", res)


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda_mlir") is not None,
                    reason="numba-cuda-mlir is installed: ACCEL_CUDA_JIT=mlir would not crash")
def test_a_crashed_stage_keeps_the_stages_before_it(tmp_path):
    env = dict(os.environ, ACCEL_CUDA_JIT="mlir")  # the compile stage cannot import its JIT
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compile-only", "--out",
                           str(tmp_path), "--name", "crash"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check-crash.json").read_text())
    assert report["plan"] == ["environment", "compile"]
    env_stage, comp = report["stages"]["environment"], report["stages"]["compile"]
    assert env_stage["ok"] and env_stage["packages"]["numpy"]
    assert not comp["ok"] and comp["stage"]["returncode"] not in (0, None)
    assert "numba_cuda_mlir" in comp["stage"]["tail"]
    md = (tmp_path / "gpu_check-crash.md").read_text()
    assert "| compile | FAILED (exit 1) |" in md and "| environment | ok |" in md


def test_no_time_left_skips_a_stage_but_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--compile-only", "--out",
                           str(tmp_path), "--budget", "4", "--name", "short"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "gpu_check-short.json").read_text())
    assert proc.returncode == 1
    comp = report["stages"]["compile"]
    assert not comp["ok"] and (comp["stage"]["timed_out"] or comp.get("skipped"))
    assert report["elapsed_s"] < 30
