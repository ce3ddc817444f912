"""Timing for the speed scripts and benchmarks/gpu_check.py: one way to time a call, to run a
worker process, to note the machine and to write the JSON.

- ``median(fn, repeat)``: the median of repeated timed calls after warm-up calls, over at
  least ``repeat`` calls and ``min_time`` seconds in all; with ``sync`` (a device's
  synchronize) each call's time includes it, or with ``host_only`` it runs outside the timing
  every 50 calls (what a launch costs the host). ``gpu_median``: device time (CUDA events).
- ``run_worker(script, *args)``: ``script`` in a fresh Python process, its last stdout line
  read as JSON (what ``reply`` prints). torch runs in a process of its own: two thread pools
  in one process slow each other down; so do the rounds that alternate accel and torch, each
  process getting the same share of a noisy machine.
- ``check_load()`` warns when other processes share the cores; ``machine()`` is the JSON's
  ``meta``; ``spread`` sums up rounds; ``write_json`` writes ``<out>/<name>.json``.

It imports nothing of accel, so it can time accel's import and compile, and run in workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "out"  # benchmarks/out/
# one BLAS, OpenMP and Numba thread (the environment of a pinned worker)
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                              "NUMBA_NUM_THREADS")}


def median(fn, repeat, *, warmup=2, min_time=0.0, sync=None, host_only=False) -> float:
    """Median seconds of ``fn()`` over ``max(repeat, as many as fill min_time)`` calls, after
    ``warmup`` untimed calls. ``sync``: called after each call inside its time (the device's
    work counts), or with ``host_only`` outside it, every 50 calls (the queue never fills)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        if sync is not None and not host_only:
            sync()
        times.append(time.perf_counter() - t0)
        if host_only and sync is not None and len(times) % 50 == 0:
            sync()
    if sync is not None:
        sync()
    return float(np.median(times))


def gpu_median(fn, args=(), repeat=20, warmup=3) -> float:
    """Median device seconds of ``fn(*args)`` (CUDA events around each call, by
    ``cupyx.profiler.benchmark``)."""
    from cupyx.profiler import benchmark

    return float(np.median(benchmark(fn, args, n_repeat=repeat, n_warmup=warmup).gpu_times))


def spread(values) -> dict:
    """Median, min and max of per-round values."""
    v = np.asarray(values, float)
    return dict(median=float(np.median(v)), min=float(v.min()), max=float(v.max()))


def check_load(limit=0.5) -> float:
    """The 1-minute load average, with a warning above ``limit``: parallel timings then wait
    for time slices the other processes hold."""
    load = os.getloadavg()[0]
    if load > limit:
        print(f"warning: load average {load:.2f} before the run: other processes share the "
              "cores, and parallel timings wait for time slices", flush=True)
    return load


def machine(load_before, **settings) -> dict:
    """The JSON's ``meta``: the run's ``settings``, the machine, the versions, the date and
    the load average before and after."""
    meta = dict(settings, cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), numpy=np.__version__)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        meta.update(numba=numba.__version__, numba_threads=numba.get_num_threads())
    return dict(meta, date=time.strftime("%Y-%m-%d %H:%M:%S"), load_before=load_before,
                load_after=os.getloadavg()[0], command=" ".join(["python", *sys.argv]))


def reply(result) -> None:
    """A worker's answer: ``result`` as one JSON line on stdout (``run_worker`` reads it)."""
    print(json.dumps(result), flush=True)


def run_worker(script, *args, env=None, timeout=None) -> dict:
    """Run ``python script *args`` in a fresh process (``env``: variables added to this
    process's environment) and return the JSON of its last stdout line. A failure raises
    RuntimeError with the end of its stderr; past ``timeout`` seconds, TimeoutExpired."""
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(map(str, args))} exited "
                           f"{proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_missing() -> str | None:
    """Why torch cannot run here, or None when it is installed."""
    import importlib.util

    return None if importlib.util.find_spec("torch") else "torch is not installed"


def torch_rows(script, args) -> tuple[dict, str | None]:
    """(torch's rows, None) from ``script --worker [--quick]`` in a fresh process, or ({},
    why not) with ``--no-torch`` or without torch (said on stdout)."""
    why = "--no-torch" if args.no_torch else torch_missing()
    if why:
        print(f"torch rows skipped: {why}")
        return {}, why
    return run_worker(script, "--worker", *(["--quick"] if args.quick else [])), None


def parser(doc) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=" ".join(doc.strip().split("\n\n")[0].split()))


def add_out(ap, what) -> None:
    """The ``--out DIR`` option (default benchmarks/out/) for the files ``what``."""
    ap.add_argument("--out", type=Path, default=OUT, metavar="DIR",
                    help=f"folder for {what} (default: benchmarks/out/)")


def write_json(out, name, record) -> Path:
    """Write ``record`` to ``<out>/<name>.json`` (the folder made if missing); its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return path
