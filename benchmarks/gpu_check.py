"""One command on a device: everything accel can check on a GPU, in one JSON + Markdown.

    python benchmarks/gpu_check.py --out DIR [--quick] [--compile-only]

Always: every CUDA kernel compiled for sm_80 and sm_90 (``accel.cuda_compile``: PTX from
NVVM, registers and spills from ptxas or nvJitLink).

On a GPU (CuPy imports and sees a device), also:
- the GPU half of the test suite: the CuPy-parametrized tests (``pytest -k cupy``) and the
  CUDA kernel checks of tests/test_kernels_cuda.py on the device instead of the simulator;
- every kernel against the xp reference on the device (CuPy arrays, awkward and book shapes);
- benchmark rows: fused Adam at 1e6..1e8 elements against the device's copy bandwidth (a
  CuPy copy), batch norm training forward + backward (fused vs reference vs copy
  bandwidth), the MLP training step against torch on CUDA when torch sees the GPU.

Without a GPU it says so, runs the compile part only, writes ``"gpu": null`` and exits 0
(1 when a kernel fails to compile). Writes DIR/gpu_check-<name>.json and .md.
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# scalars each kernel is checked with on the device (the reference's, in order)
SCALARS = {
    "sgd": (0.05, 0.01),
    "momentum": (0.05, 0.9, 0.9, 1e-3),
    "nesterov": (0.05, 0.8, 1e-3),
    "adagrad": (0.05, 1e-7, 0.0),
    "rmsprop": (0.01, 0.99, 1e-7, 1e-3),
    "adam": (0.9, 0.999, 1e-8, 0.01, 1.3, 1e-2, 0.999),
    "batchnorm_forward_train": (0.9, 1e-5),
    "batchnorm_forward_eval": (1e-5,),
    "batchnorm_backward": (),
    "bias_activation": (0.0,),
    "activation_backward_bias": (0.0,),
    "softmax_cross_entropy": (),
}
FLAT_SIZES = (1, 37, 1_000_003)
SHAPES = ((1, 1), (3, 37), (100, 100), (1024, 100), (1024, 4096))


# -- the device


def device_info():
    """Name, compute capability, driver/runtime versions of CuPy's device 0; None without."""
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


# -- compile (no GPU needed)


def compile_part():
    from accel import cuda_compile

    t0 = time.perf_counter()
    info = cuda_compile.compile_all()
    info["elapsed_s"] = time.perf_counter() - t0
    return info


# -- the GPU half of the tests


def run_tests(quick):
    env = dict(os.environ, ACCEL_CUDA_DEVICE="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = {}
    cmds = {
        "pytest_cupy": [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-k", "cupy",
                        "-p", "no:cacheprovider", str(ROOT / "tests")],
        "kernel_checks_on_device": [sys.executable, str(ROOT / "tests" / "test_kernels_cuda.py")],
    }
    for name, cmd in cmds.items():
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        out[name] = dict(command=" ".join(cmd[1:]), returncode=proc.returncode,
                         ok=proc.returncode == 0, elapsed_s=time.perf_counter() - t0,
                         tail=(proc.stdout + proc.stderr)[-3000:])
    return out


# -- every kernel against the reference, on the device


def _arrays(cp, rng, kinds, n_ref_arrays, shape, flat, labels):
    out = []
    size = shape[0] * shape[1]
    for k, kind in enumerate(kinds[:n_ref_arrays]):
        dtype = kind[1]
        if k in labels:
            out.append(cp.asarray(rng.integers(0, shape[1], shape[0])))
            continue
        s = (size,) if flat else (shape if kind[2] == 2 else shape[1:])
        a = rng.standard_normal(s) * 3 + 1 if k == 0 else rng.random(s) + 0.5
        out.append(cp.asarray(a.astype(dtype)))
    return out


def kernels_on_device(quick):
    import cupy as cp

    from accel import cuda_compile, dispatch

    rng = np.random.default_rng(0)
    rows = []
    for ref, op, kernel in cuda_compile.cuda_kernels():
        for dtype, tol in (("float32", 2e-4), ("float64", 1e-10)):
            _, kinds, n_arrays = cuda_compile.launch_arguments(ref, op, kernel, dtype)
            cases = [(1, n) for n in FLAT_SIZES] if op.flat else SHAPES
            for shape in cases[:3] if quick else cases:
                arrays = _arrays(cp, rng, kinds, n_arrays, shape, op.flat, op.labels)
                copies = [a.copy() for a in arrays]
                scalars = SCALARS[op.kernel]
                row = dict(kernel=op.kernel, dtype=dtype, shape=list(shape), ok=False)
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
    return rows


# -- benchmark rows on the device


def bench_device(quick):
    import cupy as cp
    from bench_kernels import bn_case  # this folder (the script's) is on sys.path
    from cupyx.profiler import benchmark

    from accel import dispatch, functional

    def gpu_time(fn, args=(), n=20):
        return float(np.median(benchmark(fn, args, n_repeat=n, n_warmup=3).gpu_times))

    rows = []
    scalars = (0.9, 0.999, 1e-8, 1e-3, 1.0, 0.0, 1.0)
    for n in ([10**6] if quick else [10**6, 10**7, 10**8]):
        p = cp.random.standard_normal(n, dtype=cp.float32)
        g = cp.random.standard_normal(n, dtype=cp.float32) * 1e-3
        m, v = cp.zeros_like(p), cp.zeros_like(p)
        fused = gpu_time(dispatch.optimizer_step, (functional.adam, p, g, (m, v), scalars))
        path = dispatch.last_path("adam")
        ref = gpu_time(functional.adam, (p, g, m, v, *scalars), n=10)
        dst = cp.empty_like(p)
        copy = gpu_time(lambda: dst.__setitem__(Ellipsis, p))
        copy_bw = 8 * n / copy
        rows.append(dict(op="adam", n=n, dtype="float32", path=path, fused_s=fused,
                         reference_s=ref, copy_s=copy, fused_GBps=28 * n / fused / 1e9,
                         copy_GBps=copy_bw / 1e9,
                         fraction_of_copy_bw=(28 * n / fused) / copy_bw))
    for n, d in ([(1024, 100)] if quick else [(128, 100), (1024, 100), (1024, 1024),
                                              (1024, 4096)]):
        case = bn_case(cp, n, d, np.random.default_rng(1))
        x, fwd_bwd = case.x, case.fwd_bwd

        fused = gpu_time(fwd_bwd, (dispatch,))
        path = dispatch.last_path("batchnorm_backward")
        ref = gpu_time(fwd_bwd, (functional,), n=10)
        dst = cp.empty_like(x)
        copy = gpu_time(lambda: dst.__setitem__(Ellipsis, x))
        nbytes = 5 * n * d * 4  # read x, write out; read x, dy, write dx
        rows.append(dict(op="batchnorm_fwd_bwd", shape=[n, d], dtype="float32", path=path,
                         fused_s=fused, reference_s=ref, speedup_vs_reference=ref / fused,
                         fused_GBps=nbytes / fused / 1e9, copy_GBps=8 * n * d / copy / 1e9,
                         fraction_of_copy_bw=(nbytes / fused) / (8 * n * d / copy)))
    rows += bench_mlp(quick)
    return rows


MLP_SIZES = (784, 100, 100, 100, 100, 10)


def bench_mlp(quick):
    """The 784-100x4-10 MLP training step (batch 128, Adam, float32) on CuPy, fused and
    reference path; torch CUDA in its own process when it sees the GPU."""
    import cupy as cp

    from accel import MultiLayerNet, dispatch, optim

    rng = np.random.default_rng(2)
    x = rng.standard_normal((128, MLP_SIZES[0]), dtype=np.float32)
    t = rng.integers(0, MLP_SIZES[-1], 128)
    net = MultiLayerNet(MLP_SIZES[0], list(MLP_SIZES[1:-1]), MLP_SIZES[-1], dtype=np.float32,
                        backend="cupy", seed=0)
    opt = optim.Adam(lr=1e-3)
    x, t = net.prepare(x, t)

    def step():
        opt.update(net.params, net.loss_and_grads(x, t)[1])

    sync, reps = cp.cuda.Device().synchronize, 30 if quick else 200
    row = dict(op="mlp_step", shape=list(MLP_SIZES), batch=128, dtype="float32",
               fused_s=_wall_median(step, sync, reps))
    with dispatch.use("reference"):  # every op a CuPy launch: do the fused kernels pay here?
        row["reference_s"] = _wall_median(step, sync, reps)
    row["fused_over_reference"] = row["fused_s"] / row["reference_s"]
    proc = subprocess.run([sys.executable, __file__, "--torch-mlp-worker",
                           "1" if quick else "0"], capture_output=True, text=True)
    if proc.returncode == 0:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res.get("skipped"):
            row["torch_skipped"] = res["skipped"]
        else:
            row.update(torch_s=res["mlp"], torch=res["torch"],
                       fused_over_torch=row["fused_s"] / res["mlp"])
    else:
        row["torch_skipped"] = f"torch worker failed: {proc.stderr.strip()[-500:]}"
    return [row]


def _wall_median(fn, sync, reps):
    """Median wall seconds of fn() + sync (a training step includes the host's work)."""
    for _ in range(5):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


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

    print(json.dumps({"mlp": _wall_median(step, torch.cuda.synchronize, 30 if quick else 200),
                      "torch": torch.__version__}))


# -- output


def summary_md(report) -> str:
    gpu = report["gpu"]
    comp = report["compile"]
    lines = ["# accel GPU check", ""]
    if gpu is None:
        lines += [f"**No GPU**: {report['gpu_skipped']}. Only the compile-only part ran.", ""]
    else:
        lines += [f"Device: **{gpu['name']}**, compute capability {gpu['compute_capability']}, "
                  f"driver {gpu['driver']}, runtime {gpu['runtime']}, CuPy {gpu['cupy']}.", ""]
    rows = comp["rows"]
    ok = sum(r["ok"] for r in rows)
    tool = comp.get("ptxas_skipped") or ""
    lines += [f"## Compile for sm_80 / sm_90: {ok}/{len(rows)} ok",
              "", f"NVVM {comp.get('nvvm_version')} (wheel {comp.get('nvvm_wheel')}), ptxas on "
              f"PATH: {comp.get('ptxas_version')}, nvJitLink {comp.get('nvjitlink_version')}. "
              f"{tool}", "",
              "| kernel | dtype | cc | ok | registers | spill bytes (st/ld) | threads/block |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['dtype']} | {r['cc']} | {'✓' if r['ok'] else '✗'} "
                     f"| {r.get('registers', '—')} | {r.get('spill_store_bytes', '—')}/"
                     f"{r.get('spill_load_bytes', '—')} | {r.get('threads_per_block')} |")
    for r in rows:
        if r.get("error"):
            lines.append(f"\n✗ {r['kernel']} {r['dtype']} sm_{r['cc']}: {r['error'][:300]}")
    if gpu is not None:
        lines += ["", "## Tests on the device", ""]
        for name, t in report["tests"].items():
            lines.append(f"- {name}: {'ok' if t['ok'] else 'FAILED'} ({t['elapsed_s']:.0f} s)")
        bad = [r for r in report["kernels"] if not r["ok"]]
        lines += ["", f"## Kernels vs reference on the device: "
                  f"{len(report['kernels']) - len(bad)}/{len(report['kernels'])} ok", ""]
        lines += [f"- ✗ {r['kernel']} {r['dtype']} {r['shape']}: "
                  f"{r.get('error', r.get('max_rel_error'))}" for r in bad]
        lines += ["", "## Benchmarks (float32, medians)", ""]
        for r in report["bench"]:
            size = r.get("n") or "x".join(map(str, r["shape"]))
            extra = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if isinstance(v, float))
            lines.append(f"- {r['op']} {size}: {extra}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/", help="folder for the JSON and .md")
    ap.add_argument("--name", default=None, help="name in the file names (default: the GPU's, "
                    "or 'compile-only')")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--compile-only", action="store_true",
                    help="only compile, even on a GPU (what the test suite runs)")
    ap.add_argument("--torch-mlp-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_mlp_worker is not None:
        torch_mlp_worker(args.torch_mlp_worker == "1")
        return 0

    gpu, why = (None, "--compile-only") if args.compile_only else device_info()
    print(f"GPU: {gpu['name']} (cc {gpu['compute_capability']})" if gpu else
          f"no GPU ({why}): compile-only")
    report = dict(gpu=gpu, gpu_skipped=why, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                  platform=platform.platform(), python=platform.python_version())
    import numba

    report.update(numpy=np.__version__, numba=numba.__version__)
    try:
        import numba_cuda

        report["numba_cuda"] = numba_cuda.__version__
    except ImportError:
        report["numba_cuda"] = None
    report["compile"] = comp = compile_part()
    n_ok = sum(r["ok"] for r in comp["rows"])
    print(f"compiled {n_ok}/{len(comp['rows'])} kernel x dtype x cc in {comp['elapsed_s']:.1f} s"
          + (f"; NVVM: {comp['nvvm_problem']}" if comp["nvvm_problem"] else ""))
    failed = n_ok < len(comp["rows"])
    if gpu is not None:
        report["tests"] = run_tests(args.quick)
        report["kernels"] = kernels_on_device(args.quick)
        report["bench"] = bench_device(args.quick)
        failed |= not all(t["ok"] for t in report["tests"].values())
        failed |= not all(r["ok"] for r in report["kernels"])
    name = args.name or ("compile-only" if gpu is None else
                         gpu["name"].lower().replace(" ", "-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_check-{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"gpu_check-{name}.md").write_text(summary_md(report))
    print(summary_md(report))
    print(f"wrote {out / f'gpu_check-{name}.json'} and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
