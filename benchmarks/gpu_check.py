"""The one command for a GPU visit: everything accel can check on a GPU, kept stage by stage.

    pip install --no-index --no-deps --no-build-isolation -e . && \\
        python benchmarks/gpu_check.py --out DIR [--quick]

(the install needs no network: the GPU machines have none). Stages, in this order, each in a
process of its own with a time limit, the JSON and Markdown summary rewritten into DIR after
every stage, so a crash, a hang or the end of the visit keeps whatever ran before:

1. ``environment``: Python, NumPy, Numba, numba-cuda, CuPy, torch versions; the device; where
   NVVM, NVRTC and nvJitLink were found;
2. ``kernels`` (GPU): every kernel against the xp reference on the device (CuPy arrays,
   awkward and book shapes), and which kernels fell back to the reference and why;
3. ``bench`` (GPU): fused Adam at 1e6..1e8 elements against the device's copy bandwidth,
   batch norm forward + backward (fused, reference, copy bandwidth), the 784-100x4-10 MLP
   training step (fused, reference, torch CUDA eager);
4. ``tests`` (GPU): the GPU half of the test suite (the CuPy-parametrized tests, and the
   CUDA kernel checks of tests/test_kernels_cuda.py on the device instead of the simulator);
5. ``compile``: every CUDA kernel × dtype compiled for sm_80 and sm_90 (PTX from NVVM;
   registers and spills from ptxas or nvJitLink). Without a GPU only stages 1 and 5 run
   (``"gpu": null``); ``--compile-only`` asks for that on a GPU too;
6. ``mlir`` (GPU, when ``numba_cuda_mlir`` imports): stage 2 again with the kernels compiled
   by numba-cuda-mlir instead of numba-cuda (``ACCEL_CUDA_JIT=mlir``).

The whole run keeps within ``--budget`` seconds (default 450, 210 with ``--quick``): a stage
gets its own limit or what is left, whichever is less. Writes DIR/gpu_check-<name>.json and
.md (name: the GPU's, or "compile-only"); exits 1 when a stage failed or a kernel did not
compile or did not match, else 0.
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "speed"))  # the speed scripts' timing and batch-norm case
import timing  # noqa: E402

# stage → seconds it may take (full, --quick); the run's budget caps them
STAGES = {
    "environment": (60, 60),
    "kernels": (150, 75),
    "bench": (150, 60),
    "tests": (150, 60),
    "compile": (120, 60),
    "mlir": (90, 45),
}
GPU_STAGES = ("environment", "kernels", "bench", "tests", "compile", "mlir")
NO_GPU_STAGES = ("environment", "compile")
BUDGET = (450, 210)  # seconds for the whole run (full, --quick)

# scalars each kernel is checked with on the device (the reference's, in order); an optimizer's
# last is ``decayed``: weight decay on the first 30 elements (all of the smaller buffers)
SCALARS = {
    "sgd": (0.05, 0.01, 30),
    "momentum": (0.05, 0.9, 0.9, 1e-3, 30),
    "nesterov": (0.05, 0.8, 1e-3, 30),
    "adagrad": (0.05, 1e-7, 1e-2, 30),
    "rmsprop": (0.01, 0.99, 1e-7, 1e-3, 30),
    "adadelta": (1.0, 0.9, 1e-6, 1e-2, 30),
    "adam": (0.9, 0.999, 1e-8, 0.01, 7, True, 1e-2, 0.999, 30),
    "clip_factor": (0.5, 1e-6, True),
    "batchnorm_forward_train": (0.9, 1e-5),
    "batchnorm_forward_eval": (1e-5,),
    "batchnorm_backward": (),
    "bias_activation": (0.0,),
    "activation_backward_bias": (0.0,),
    "softmax_cross_entropy": (),
    "scaled_add": (0.01,),
}
FLAT_SIZES = (1, 37, 1_000_003)
SHAPES = ((1, 1), (3, 37), (100, 100), (1024, 100), (1024, 4096))
MLP_SIZES = (784, 100, 100, 100, 100, 10)


# -- stage 1: the environment


def _version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001  not installed
        return None


def device_info():
    """(name, compute capability, memory, driver/runtime versions of CuPy's device 0, None)
    or (None, why there is none)."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy sees no CUDA device"
    except Exception as exc:  # noqa: BLE001  ImportError, CUDARuntimeError, ...
        return None, f"{type(exc).__name__}: {exc}"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else name

    def version(v):
        return f"{v // 1000}.{v % 1000 // 10}"

    return dict(name=name, compute_capability=f"{props['major']}.{props['minor']}",
                multiprocessors=props["multiProcessorCount"],
                memory_GiB=props["totalGlobalMem"] / 2**30,
                driver=version(cupy.cuda.runtime.driverGetVersion()),
                runtime=version(cupy.cuda.runtime.runtimeGetVersion()),
                cupy=cupy.__version__), None


def cuda_libraries() -> dict:
    """Where each CUDA library the compile needs was found (cuda-pathfinder's search)."""
    out = {}
    try:
        from cuda import pathfinder
    except Exception as exc:  # noqa: BLE001
        return {"error": f"cuda-pathfinder: {type(exc).__name__}: {exc}"}
    for lib in ("nvvm", "nvrtc", "nvJitLink", "cudart"):
        try:
            dl = pathfinder.load_nvidia_dynamic_lib(lib)
            out[lib] = dict(path=dl.abs_path, found_via=getattr(dl, "found_via", None))
        except Exception as exc:  # noqa: BLE001  DynamicLibNotFoundError, ...
            out[lib] = dict(error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return out


def stage_environment(quick, emit):
    gpu, why = device_info()
    env = dict(gpu=gpu, gpu_skipped=why, platform=platform.platform(),
               python=platform.python_version(), cpus=os.cpu_count(),
               packages={n: _version(n) for n in (
                   "numpy", "numba", "numba-cuda", "numba-cuda-mlir", "cupy-cuda13x",
                   "cupy-cuda12x", "torch", "accel-dlfs", "cuda-bindings", "nvidia-nvvm",
                   "nvidia-cuda-nvrtc", "nvidia-nvjitlink")},
               cuda_home=os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"))
    emit(env)
    try:
        from accel import kernels
    except ImportError as exc:
        raise SystemExit(f"accel does not import ({exc}): install it first, offline: pip "
                         "install --no-index --no-deps --no-build-isolation -e .") from exc
    env["accel"] = str(Path(kernels.__file__).parents[1])
    env["cuda_libraries"] = cuda_libraries()
    emit(env)


# -- stage 2: every kernel against the reference, on the device


def _arrays(cp, rng, kinds, n_ref_arrays, shape, flat, labels, doubles=()):
    out = []
    size = shape[0] * shape[1]
    for k, kind in enumerate(kinds[:n_ref_arrays]):
        dtype = kind[1]
        if k in doubles:  # the gradient-clipping array: a factor below 1, no running sum
            out.append(cp.asarray([0.7, 0.0]))
            continue
        if k in labels:
            out.append(cp.asarray(rng.integers(0, shape[1], shape[0])))
            continue
        s = (size,) if flat else (shape if kind[2] == 2 else shape[1:])
        a = rng.standard_normal(s) * 3 + 1 if k == 0 else rng.random(s) + 0.5
        out.append(cp.asarray(a.astype(dtype)))
    return out


def _guard_rows(cp, rng, dtype, launch):
    """The non-finite guard on the device against its reference over 3 steps (a NaN at the
    second), for a gradient of 1e6 elements: the last-block decision across many blocks."""
    from accel.kernels import guard_record as R

    from accel import dispatch
    from accel import functional as F

    rows = []
    sizes, n_buffers = (600_000, 1, 399_999), 4
    g = rng.standard_normal(sum(sizes)).astype(dtype)
    args = [np.asarray(1.5, dtype).reshape(1), g,
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            rng.standard_normal(3 * n_buffers).astype(dtype),
            np.arange(0, 3 * n_buffers + 1, 3, dtype=np.int64), np.zeros(3 * n_buffers, dtype),
            np.zeros(R.size(len(sizes), n_buffers, 4), np.int64)]
    for sticky in (1.0, 0.0):
        dev, ref = [cp.asarray(a) for a in args], [a.copy() for a in args]
        row = dict(kernel="nonfinite_guard", dtype=dtype, shape=[1, g.size], launch=launch,
                   sticky=bool(sticky), ok=False)
        try:
            for it in (1, 2, 3):
                fresh = rng.standard_normal(g.size).astype(dtype)
                if it == 2:
                    fresh[[5, 700_000]] = (np.nan, np.inf)
                dev[1][...] = cp.asarray(fresh)
                ref[1][...] = fresh
                dispatch.call(F.nonfinite_guard, *dev, scalars=(it, sticky), target="cuda")
                row["path"] = dispatch.last_path("nonfinite_guard")
                F.nonfinite_guard(*ref, it, sticky)
                same = all(np.array_equal(cp.asnumpy(dev[k]), ref[k]) for k in (3, 5, 6))
                if not same:
                    row["error"] = f"record or statistics differ at step {it}: " \
                                   f"{cp.asnumpy(dev[6])[:12]} vs {ref[6][:12]}"
                    break
            else:
                row["ok"] = row["path"] == "cuda" and ref[6][R.FIRST] == 2
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def stage_kernels(quick, emit):
    """Every kernel against the reference on the device; then, for the launch path not
    measured yet as the default (``ACCEL_CUDA_LAUNCH=direct``), the small cases again."""
    import cupy as cp

    from accel import dispatch

    rng = np.random.default_rng(0)
    rows = []
    for launch in ("numba", "direct"):
        os.environ["ACCEL_CUDA_LAUNCH"] = launch  # read by each plan's Launcher
        _kernel_rows(cp, rng, quick or launch == "direct", launch, rows, emit)
        for dtype in ("float32", "float64"):
            rows += _guard_rows(cp, rng, dtype, launch)
        emit(dict(rows=rows, fell_back=dispatch.cuda_failures()))
    os.environ.pop("ACCEL_CUDA_LAUNCH")


def _kernel_rows(cp, rng, quick, launch, rows, emit):
    from accel import dispatch
    from accel.dev import cuda_compile

    for ref, op, kernel in cuda_compile.cuda_kernels():
        if op.kernel == "nonfinite_guard":
            continue  # its own inputs: _guard_rows
        for dtype, tol in (("float32", 2e-4), ("float64", 1e-10)):
            _, kinds, n_arrays = cuda_compile.launch_arguments(ref, op, kernel, dtype)
            cases = [(1, n) for n in FLAT_SIZES] if op.flat else SHAPES
            for shape in cases[:3] if quick else cases:
                arrays = _arrays(cp, rng, kinds, n_arrays, shape, op.flat, op.labels,
                                 op.doubles)
                copies = [a.copy() for a in arrays]
                scalars = SCALARS[op.kernel]
                row = dict(kernel=op.kernel, dtype=dtype, shape=list(shape), launch=launch,
                           ok=False)
                try:
                    got = dispatch.call(ref, *arrays, scalars=scalars, target="cuda")
                    row["path"] = dispatch.last_path(op.kernel)
                    want = ref(*copies, *scalars)
                    got = () if got is None else got if isinstance(got, tuple) else (got,)
                    want = () if want is None else want if isinstance(want, tuple) else (want,)
                    worst = 0.0
                    for a, b in [*zip(got, want), *zip(arrays, copies)]:
                        a, b = cp.asnumpy(a).astype(np.float64), cp.asnumpy(b).astype(
                            np.float64)
                        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
                        worst = max(worst, float(np.abs(a - b).max(initial=0.0)) / scale)
                    row.update(max_rel_error=worst, ok=worst <= tol * max(1, shape[0]) ** 0.5
                               and row["path"] == "cuda")
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
            emit(dict(rows=rows, fell_back=dispatch.cuda_failures()))


# -- stage 3: benchmark rows on the device


def stage_bench(quick, emit):
    import cupy as cp
    from batchnorm_roofline import bn_case

    from accel import dispatch, functional

    rows = _launch_costs(quick)
    emit(dict(rows=rows))
    scalars = (0.9, 0.999, 1e-8, 1e-3, 1000, False, 0.0, 1.0, 0)
    for n in ([10**6] if quick else [10**6, 10**7, 10**8]):
        p = cp.random.standard_normal(n, dtype=cp.float32)
        g = cp.random.standard_normal(n, dtype=cp.float32) * 1e-3
        m, v = cp.zeros_like(p), cp.zeros_like(p)
        clip = functional.clip_array(p)
        site = dispatch.Site(functional.adam)  # as an optimizer calls it
        fused = timing.gpu_median(lambda: site(p, g, m, v, clip, scalars=scalars))
        path = dispatch.last_path("adam")
        ref = timing.gpu_median(functional.adam, (p, g, m, v, clip, *scalars), repeat=10)
        norm_site = dispatch.Site(functional.clip_factor)  # clip_norm's one reduction
        norm = timing.gpu_median(lambda: norm_site(g, clip, scalars=(1.0, 1e-6, True)))
        clip[...] = cp.asarray([1.0, 0.0])
        dst = cp.empty_like(p)
        copy = timing.gpu_median(lambda: dst.__setitem__(Ellipsis, p))
        copy_bw = 8 * n / copy
        rows.append(dict(op="adam", n=n, dtype="float32", path=path, fused_s=fused,
                         reference_s=ref, copy_s=copy, fused_GBps=28 * n / fused / 1e9,
                         copy_GBps=copy_bw / 1e9,
                         fraction_of_copy_bw=(28 * n / fused) / copy_bw,
                         clip_factor_s=norm, clip_factor_GBps=4 * n / norm / 1e9))
        emit(dict(rows=rows))
    for n, d in ([(1024, 100)] if quick else [(128, 100), (1024, 100), (1024, 1024),
                                              (1024, 4096)]):
        case = bn_case(cp, n, d, np.random.default_rng(1))
        x, fwd_bwd = case.x, case.fwd_bwd

        fused = timing.gpu_median(fwd_bwd, (dispatch,))
        path = dispatch.last_path("batchnorm_backward")
        ref = timing.gpu_median(fwd_bwd, (functional,), repeat=10)
        dst = cp.empty_like(x)
        copy = timing.gpu_median(lambda: dst.__setitem__(Ellipsis, x))
        nbytes = 5 * n * d * 4  # read x, write out; read x, dy, write dx
        rows.append(dict(op="batchnorm_fwd_bwd", shape=[n, d], dtype="float32", path=path,
                         fused_s=fused, reference_s=ref, speedup_vs_reference=ref / fused,
                         fused_GBps=nbytes / fused / 1e9, copy_GBps=8 * n * d / copy / 1e9,
                         fraction_of_copy_bw=(nbytes / fused) / (8 * n * d / copy)))
        emit(dict(rows=rows))
    rows.append(bench_mlp(quick))
    emit(dict(rows=rows))


def _launch_costs(quick):
    """Host µs per launch of Adam over 1000 float32 elements, by each launch path: Numba's
    ``kernel[blocks, threads, stream](*args)``, accel's Launcher with numba-cuda's launch
    (configured once per stream), the Launcher's direct cuda.core launch, a dispatch Site
    (what an optimizer calls), beside a CuPy elementwise launch (``p += g``)."""
    import cupy as cp
    from accel.kernels import cuda_jit, guard_record, optim_cuda

    from accel import dispatch, functional

    n = 200 if quick else 2000
    p = cp.random.standard_normal(1000, dtype=cp.float32)
    g, m, v = cp.zeros_like(p), cp.zeros_like(p), cp.zeros_like(p)
    record = cp.zeros(guard_record.FLAGS, cp.int64)
    clip = functional.clip_array(p)
    scalars = (0.9, 0.999, 1e-8, 1e-3, 10.0, 0.0, 0.0, 1.0, 0.0)
    args = (p, g, m, v, clip, *scalars, record)
    kernel, launch = optim_cuda.adam, optim_cuda.launch("adam", p)
    sync = cp.cuda.Device().synchronize
    stream = cp.cuda.get_current_stream().ptr
    ext = dispatch.numba_cuda().external_stream(stream) if stream else 0
    out = dict(op="launch_cost", n=1000, dtype="float32")
    by_numba = cuda_jit.Launcher(kernel, launch, "numba")
    direct = cuda_jit.Launcher(kernel, launch, "direct")
    site = dispatch.Site(functional.adam)
    paths = {
        "numba_us": lambda: kernel[launch[0], launch[1], ext](*args),
        "launcher_numba_us": lambda: by_numba(stream, args),
        "launcher_direct_us": lambda: direct(stream, args),
        "site_us": lambda: site(p, g, m, v, clip, scalars=scalars),
        "cupy_elementwise_us": lambda: p.__iadd__(g),
    }
    for name, fn in paths.items():
        try:
            # host µs of a launch: the device synchronized every 50 calls, outside the timing
            out[name] = timing.median(fn, n, warmup=20, sync=sync, host_only=True) * 1e6
        except Exception as exc:  # noqa: BLE001  a path that cannot launch here
            out[name.replace("_us", "_error")] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return [out]


def bench_mlp(quick):
    """The 784-100x4-10 MLP training step (batch 128, Adam, float32) on CuPy as the Trainer
    takes it (``Trainer.step``: the non-finite guard on the device, forward, backward, the
    update; nothing read back), fused and reference path; torch CUDA eager (no guard) in its
    own process when it sees the GPU."""
    import cupy as cp

    from accel import MultiLayerNet, Trainer, dispatch, optim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((128, MLP_SIZES[0]), dtype=np.float32)
    t = rng.integers(0, MLP_SIZES[-1], 128)
    net = MultiLayerNet(MLP_SIZES[0], list(MLP_SIZES[1:-1]), MLP_SIZES[-1], dtype=np.float32,
                        backend="cupy", seed=0)
    trainer = Trainer(net, optim.Adam(lr=1e-3), x, t, verbose=False)
    x, t = net.prepare(x, t)

    def step():
        trainer.step(x, t)

    sync, reps = cp.cuda.Device().synchronize, 30 if quick else 200
    row = dict(op="mlp_step", shape=list(MLP_SIZES), batch=128, dtype="float32",
               fused_s=timing.median(step, reps, warmup=5, sync=sync))
    with dispatch.use("reference"):  # every op a CuPy launch: do the fused kernels pay here?
        row["reference_s"] = timing.median(step, reps, warmup=5, sync=sync)
    row["fused_over_reference"] = row["fused_s"] / row["reference_s"]
    try:
        proc = subprocess.run([sys.executable, __file__, "--torch-mlp-worker",
                               "1" if quick else "0"], capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        row["torch_skipped"] = "torch worker took over 120 s"
        return row
    if proc.returncode == 0:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res.get("skipped"):
            row["torch_skipped"] = res["skipped"]
        else:
            row.update(torch_s=res["mlp"], torch=res["torch"],
                       fused_over_torch=row["fused_s"] / res["mlp"])
    else:
        row["torch_skipped"] = f"torch worker failed: {proc.stderr.strip()[-500:]}"
    return row


def torch_mlp_worker(quick):
    try:
        import torch
    except ImportError as exc:
        print(json.dumps({"skipped": f"torch not importable: {exc}"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": f"torch {torch.__version__} sees no CUDA device"}))
        return
    dev = torch.device("cuda")
    mods = []
    for i in range(len(MLP_SIZES) - 1):
        mods.append(torch.nn.Linear(MLP_SIZES[i], MLP_SIZES[i + 1]))
        if i < len(MLP_SIZES) - 2:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(128, MLP_SIZES[0], device=dev)
    t = torch.randint(0, MLP_SIZES[-1], (128,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), t).backward()
        opt.step()

    seconds = timing.median(step, 30 if quick else 200, warmup=5, sync=torch.cuda.synchronize)
    print(json.dumps({"mlp": seconds, "torch": torch.__version__}))


# -- stage 4: the GPU half of the tests


def stage_tests(quick, emit):
    env = dict(os.environ, ACCEL_CUDA_DEVICE="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = {"commands": {}}
    cmds = {
        "kernel_checks_on_device": [sys.executable, str(ROOT / "tests" / "test_kernels_cuda.py")],
        "pytest_cupy": [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-k", "cupy",
                        "-p", "no:cacheprovider", str(ROOT / "tests")],
    }
    for name, cmd in cmds.items():
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        out["commands"][name] = dict(command=" ".join(cmd[1:]), returncode=proc.returncode,
                                     ok=proc.returncode == 0,
                                     elapsed_s=time.perf_counter() - t0,
                                     tail=(proc.stdout + proc.stderr)[-3000:])
        emit(out)


# -- stage 5: compile for sm_80 / sm_90 (no GPU needed)


def stage_compile(quick, emit):
    from accel.dev import cuda_compile

    t0 = time.perf_counter()
    info = cuda_compile.compile_all()
    info["elapsed_s"] = time.perf_counter() - t0
    emit(info)


# -- stage 6: the kernels under numba-cuda-mlir


def stage_mlir(quick, emit):
    try:
        import numba_cuda_mlir  # noqa: F401
    except ImportError as exc:
        emit(dict(skipped=f"numba-cuda-mlir not installed ({exc})"))
        return
    version = _version("numba-cuda-mlir")
    emit(dict(version=version))
    stage_kernels(True, lambda result: emit(dict(result, version=version)))


STAGE_FUNCTIONS = {"environment": stage_environment, "kernels": stage_kernels,
                   "bench": stage_bench, "tests": stage_tests, "compile": stage_compile,
                   "mlir": stage_mlir}


def run_stage_here(name, quick, result_path):
    """The child side: run one stage, writing its result (so far) to ``result_path`` after
    each step, atomically, so the parent keeps it even if this process dies."""
    path = Path(result_path)

    def emit(result):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=str))
        os.replace(tmp, path)

    STAGE_FUNCTIONS[name](quick, emit)


# -- the parent: stages in order, each guarded and time-limited


def run_stage(name, quick, limit_s, env=None) -> dict:
    """Run stage ``name`` in a process of its own (its own process group, killed whole at
    ``limit_s``); returns what it emitted, with ok/returncode/timed_out/elapsed_s/tail."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--stage", name, "--result", str(result_path)]
        cmd += ["--quick"] if quick else []
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=ROOT, env=env, start_new_session=True)
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        result = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = {}
    result = result if isinstance(result, dict) else {"result": result}
    result.update(stage=dict(returncode=proc.returncode, timed_out=timed_out,
                             limit_s=limit_s, elapsed_s=round(time.perf_counter() - t0, 1),
                             ok=proc.returncode == 0 and not timed_out,
                             tail=(output or "")[-3000:]))
    return result


def stage_ok(name, result) -> bool:
    """The stage ran to its end and what it checked holds."""
    if not result["stage"]["ok"]:
        return False
    if name == "kernels" or (name == "mlir" and "rows" in result):
        return bool(result.get("rows")) and all(r["ok"] for r in result["rows"])
    if name == "tests":
        commands = result.get("commands", {})
        return bool(commands) and all(t["ok"] for t in commands.values())
    if name == "compile":
        rows = result.get("rows", [])
        return bool(rows) and all(r["ok"] for r in rows)
    return True


def summary_md(report) -> str:
    env = report["stages"].get("environment", {})
    gpu = report.get("gpu")
    lines = ["# accel GPU check", ""]
    if gpu is None:
        why = report.get("gpu_skipped") or "the environment stage did not say"
        lines += [f"**No GPU**: {why}. Only the stages that need none ran.", ""]
    else:
        lines += [f"Device: **{gpu['name']}**, compute capability {gpu['compute_capability']}, "
                  f"{gpu['multiprocessors']} SMs, {gpu['memory_GiB']:.0f} GiB, driver "
                  f"{gpu['driver']}, runtime {gpu['runtime']}, CuPy {gpu['cupy']}.", ""]
    lines += [f"Run {report['date']}, `{' '.join(report['argv'])}`: "
              f"{report['elapsed_s']:.0f} s of a {report['budget_s']} s budget.", "",
              "| stage | result | seconds (limit) |", "|---|---|---|"]
    for name in report["plan"]:
        res = report["stages"].get(name)
        if res is None:
            lines.append(f"| {name} | not run yet | |")
            continue
        st = res["stage"]
        what = "skipped: " + res["skipped"] if "skipped" in res and st["ok"] else (
            "ok" if res["ok"] else "timed out" if st["timed_out"] else
            f"FAILED (exit {st['returncode']})" if not st["ok"] else "FAILED (checks)")
        lines.append(f"| {name} | {what} | {st['elapsed_s']} ({st['limit_s']}) |")
    if env.get("packages"):
        lines += ["", "## Environment", "", "Python " + str(env.get("python")) + "; " + ", ".join(
            f"{k} {v}" for k, v in env["packages"].items() if v) + "."]
        for lib, where in env.get("cuda_libraries", {}).items():
            lines.append(f"- {lib}: " + (f"{where['path']} ({where.get('found_via')})"
                                         if isinstance(where, dict) and "path" in where
                                         else str(where)))
    kern = report["stages"].get("kernels")
    if kern and "rows" in kern:
        bad = [r for r in kern["rows"] if not r["ok"]]
        lines += ["", f"## Kernels vs reference on the device: "
                  f"{len(kern['rows']) - len(bad)}/{len(kern['rows'])} ok", ""]
        lines += [f"- ✗ {r['kernel']} {r['dtype']} {r['shape']}: "
                  f"{r.get('error', r.get('max_rel_error'))}" for r in bad]
        lines += [f"- fell back to the reference: {k}: {v[:300]}"
                  for k, v in kern.get("fell_back", {}).items()]
    bench = report["stages"].get("bench")
    if bench and bench.get("rows"):
        lines += ["", "## Benchmarks (float32, medians)", ""]
        for r in bench["rows"]:
            size = r.get("n") or "x".join(map(str, r["shape"]))
            extra = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if isinstance(v, float))
            lines.append(f"- {r['op']} {size}: {extra}")
    tests = report["stages"].get("tests")
    if tests and tests.get("commands"):
        lines += ["", "## Tests on the device", ""]
        for name, t in tests["commands"].items():
            lines.append(f"- {name} (`{t['command']}`): {'ok' if t['ok'] else 'FAILED'} "
                         f"({t['elapsed_s']:.0f} s)")
    comp = report["stages"].get("compile")
    if comp and "rows" in comp:
        rows = comp["rows"]
        ok = sum(r["ok"] for r in rows)
        tool = comp.get("ptxas_skipped") or ""
        lines += ["", f"## Compile for sm_80 / sm_90: {ok}/{len(rows)} ok",
                  "", f"NVVM {comp.get('nvvm_version')}, ptxas on PATH: "
                  f"{comp.get('ptxas_version')}, nvJitLink {comp.get('nvjitlink_version')}. "
                  f"{tool}", "",
                  "| kernel | dtype | cc | ok | registers | spill bytes (st/ld) | threads/block |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['kernel']} | {r['dtype']} | {r['cc']} | "
                         f"{'✓' if r['ok'] else '✗'} | {r.get('registers', '—')} | "
                         f"{r.get('spill_store_bytes', '—')}/{r.get('spill_load_bytes', '—')} "
                         f"| {r.get('threads_per_block')} |")
        for r in rows:
            if r.get("error"):
                lines.append(f"\n✗ {r['kernel']} {r['dtype']} sm_{r['cc']}: {r['error'][:300]}")
    for name in report["plan"]:
        res = report["stages"].get(name)
        if res is not None and not res["ok"]:
            lines += ["", f"## Output of the stage `{name}` (its end)", "", "```",
                      res["stage"]["tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


def write(report, out: Path, name: str):
    """Write the JSON and the Markdown summary (each atomically: a reader never sees half)."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=1, default=str)),
                         (".md", summary_md(report))):
        path = out / f"gpu_check-{name}{suffix}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--out", default="benchmarks/out/",
                    help="folder for gpu_check-<name>.json and .md (default: %(default)s)")
    ap.add_argument("--name", default=None, help="name in the file names (default: the "
                    "GPU's, or compile-only without one)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer sizes and repeats, a 210 s budget")
    ap.add_argument("--compile-only", action="store_true",
                    help="only the environment and the compile, even on a GPU (what the test "
                         "suite runs)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default: 450, or 210 with --quick)")
    ap.add_argument("--stage", choices=sorted(STAGE_FUNCTIONS), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--torch-mlp-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_mlp_worker is not None:
        torch_mlp_worker(args.torch_mlp_worker == "1")
        return 0
    if args.stage:
        run_stage_here(args.stage, args.quick, args.result)
        return 0

    t0 = time.perf_counter()
    budget = args.budget or BUDGET[args.quick]
    report = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), argv=sys.argv[:1] + (
        argv if argv is not None else sys.argv[1:]), budget_s=budget, quick=args.quick,
                  gpu=None, gpu_skipped=None, plan=list(NO_GPU_STAGES), stages={},
                  elapsed_s=0.0)
    out = Path(args.out)
    name = args.name or "compile-only"
    failed = False
    k = 0
    while k < len(report["plan"]):
        stage = report["plan"][k]
        k += 1
        left = budget - (time.perf_counter() - t0)
        limit = min(STAGES[stage][args.quick], left)
        if limit < 5:
            res = dict(skipped="no time left in the budget",
                       stage=dict(ok=False, returncode=None, timed_out=True, limit_s=0,
                                  elapsed_s=0.0, tail=""))
        else:
            env = dict(os.environ, ACCEL_CUDA_JIT="mlir") if stage == "mlir" else None
            print(f"[{time.perf_counter() - t0:5.0f} s] stage {stage} (limit {limit:.0f} s)",
                  flush=True)
            res = run_stage(stage, args.quick, limit, env)
        res["ok"] = stage_ok(stage, res)
        failed |= not res["ok"]
        report["stages"][stage] = res
        print(f"[{time.perf_counter() - t0:5.0f} s] stage {stage}: "
              f"{'ok' if res['ok'] else 'FAILED'}"
              + ("" if res["ok"] else f"\n{res['stage']['tail'][-1500:]}"), flush=True)
        if stage == "environment":
            gpu, why = res.get("gpu"), res.get("gpu_skipped")
            if gpu is not None and args.compile_only:
                gpu, why = None, f"--compile-only (device: {gpu['name']})"
            report["gpu"], report["gpu_skipped"] = gpu, why
            if gpu is not None:
                report["plan"] = list(GPU_STAGES)
                name = args.name or gpu["name"].lower().replace(" ", "-")
            else:
                print(f"no GPU ({why}): environment and compile only", flush=True)
        report["elapsed_s"] = time.perf_counter() - t0
        write(report, out, name)
    print(summary_md(report))
    print(f"wrote {out / f'gpu_check-{name}.json'} and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
