"""Compile every CUDA kernel for real GPUs without one: PTX from NVVM, then ``ptxas``.

Each kernel of ``accel.dispatch.OPS`` that has a CUDA twin is compiled, per dtype and compute
capability, with the argument types the dispatch launches it with:

- the kernel's parameters as ``Op.spec`` declares them (``Op.params``): the reference's
  arrays and scalars, then the outputs, workspaces and the guard's record;
- arrays C-contiguous, of the declared element type (the dtype, int64 for class ids and
  offsets, float64 for the gradient-clipping array) and number of dimensions;
- scalars float64 (``dispatch.call`` passes every scalar as a Python float).

A kernel that does not type or lower raises here. The PTX is then assembled for sm_XX and the
assembler's report kept: registers per thread, spill bytes, stack frame, shared memory; by
``ptxas -v`` when ``ptxas`` is on PATH and takes the PTX's version, else by nvJitLink (the
ptxas inside the CUDA wheels, of NVVM's own version). NVVM, NVRTC and nvJitLink come from pip
wheels (``numba-cuda[cu13]``, in the ``dev`` extra); ``nvvm_problem()`` says why compiling
cannot work when they are missing.

``benchmarks/gpu_check.py`` and ``tests/test_cuda_compile.py`` both call ``compile_all``.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from .. import dispatch

CCS = ((8, 0), (9, 0))  # A100, H100
DTYPES = ("float32", "float64")
REGISTERS_PER_BLOCK = 65536  # the register file one block may use, sm_80 and sm_90
PROBE_SHAPE = (1024, 100)  # an (N, D) input for the launch shape (the book's widest batch)


def cuda_kernels():
    """[(reference, Op, kernel)] for every op with a CUDA twin, in ``OPS`` order."""
    out = []
    for ref, op in dispatch.OPS.items():
        kernel = dispatch.kernels(op.family, "cuda").KERNELS.get(op.kernel)
        if kernel is not None:
            out.append((ref, op, kernel))
    return out


def launch_arguments(reference, op, kernel, dtype):
    """(names, kinds, n) of the kernel's parameters as ``op.params`` declares them: kind is
    ("array", dtype, ndim), with dtype a NumPy dtype, or ("scalar", float64); the first n
    are the reference's arrays. TypeError when the kernel's parameters are not the
    reference's and then as many more as the declaration has."""
    names = list(inspect.signature(kernel.py_func).parameters)
    ref_names = list(inspect.signature(reference).parameters)
    if names[:len(ref_names)] != ref_names or len(names) != len(op.params):
        raise TypeError(f"{op.kernel}: kernel parameters {names} are not the reference's "
                        f"{ref_names} and then the rest of {op.spec!r}")
    kinds = [("scalar", p.dtype(dtype)) if p.role == "s" else ("array", p.dtype(dtype), p.ndim)
             for p in op.params]
    return names, kinds, op.n_arrays


def signature(kinds):
    """The Numba signature (a tuple of types) of ``launch_arguments``' kinds."""
    from numba import from_dtype, types

    out = []
    for kind in kinds:
        if kind[0] == "array":
            out.append(types.Array(from_dtype(kind[1]), kind[2], "C"))
        else:
            out.append(from_dtype(kind[1]))
    return tuple(out)


def threads_per_block(op, dtype) -> int:
    """Threads per block the dispatch launches ``op`` with, for a PROBE_SHAPE input."""
    mod = dispatch.kernels(op.family, "cuda")
    x = np.empty(PROBE_SHAPE[0] * PROBE_SHAPE[1] if op.flat else PROBE_SHAPE, dtype)
    threads = mod.launch(op.kernel, *[x] * op.n_arrays)[1]
    return int(np.prod(threads))


def nvvm_problem() -> str | None:
    """None when NVVM and NVRTC load; else why not (and how to get them)."""
    try:
        from cuda import pathfinder

        for lib in ("nvvm", "nvrtc"):
            pathfinder.load_nvidia_dynamic_lib(lib)
    except Exception as exc:  # noqa: BLE001  ImportError, DynamicLibNotFoundError, ...
        return (f"{type(exc).__name__}: {exc}. NVVM and NVRTC come with "
                "pip install 'numba-cuda[cu13]' (in accel's dev extra)")
    return None


def compile_ptx(kernel, sig, cc) -> str:
    """The PTX of ``kernel`` (a ``cuda.jit`` dispatcher) for ``sig`` and compute capability
    ``cc``, compiled with the dispatcher's own options."""
    from numba import cuda

    opts = kernel.targetoptions
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc, debug=opts.get("debug"),
                              lineinfo=opts.get("lineinfo", False),
                              fastmath=opts.get("fastmath", False))
    return ptx


_PTXAS_PATTERNS = {
    "registers": r"Used (\d+) registers",
    "stack_bytes": r"(\d+) bytes stack frame",
    "spill_store_bytes": r"(\d+) bytes spill stores",
    "spill_load_bytes": r"(\d+) bytes spill loads",
    "shared_bytes": r"(\d+) bytes smem",
}


def _parse_report(text: str) -> dict:
    out = {}
    for key, pattern in _PTXAS_PATTERNS.items():
        m = re.search(pattern, text, re.I)
        out[key] = int(m.group(1)) if m else 0
    return out


def ptxas_stats(ptx: str, cc, ptxas: str) -> dict:
    """Assemble ``ptx`` for sm_XX with ``ptxas -v``; its resource report as numbers."""
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as fh:
            fh.write(ptx)
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o",
                               os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas -arch={arch} failed: {proc.stderr.strip()[-2000:]}")
    return _parse_report(proc.stderr)


def nvjitlink_stats(ptx: str, cc) -> dict:
    """The same report from nvJitLink (the ptxas inside the CUDA wheels, the version of NVVM):
    links ``ptx`` into a cubin for sm_XX with ``-Xptxas=-v``."""
    from cuda.bindings import nvjitlink

    data = ptx.encode()
    handle = nvjitlink.create(3, [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose", "-Xptxas=-v"])
    try:
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
            nvjitlink.complete(handle)
        finally:
            log = bytearray(nvjitlink.get_info_log_size(handle))
            nvjitlink.get_info_log(handle, log)
            err = bytearray(nvjitlink.get_error_log_size(handle))
            nvjitlink.get_error_log(handle, err)
    except Exception as exc:
        raise RuntimeError(f"nvJitLink sm_{cc[0]}{cc[1]}: {exc}: "
                           f"{err.decode(errors='replace')[-2000:]}") from exc
    finally:
        nvjitlink.destroy(handle)
    return _parse_report(log.decode(errors="replace"))


def nvjitlink_version() -> str | None:
    try:
        from cuda.bindings import nvjitlink

        return ".".join(map(str, nvjitlink.version()))
    except Exception:  # noqa: BLE001
        return None


def assemble(ptx: str, cc, ptxas: str | None) -> dict:
    """Registers, spills, stack and shared bytes of ``ptx`` on sm_XX, and the tool that said
    so: ``ptxas`` from PATH when it takes this PTX version, else nvJitLink from the wheels."""
    if ptxas:
        try:
            return {**ptxas_stats(ptx, cc, ptxas), "assembler": "ptxas"}
        except RuntimeError as exc:
            if "Unsupported .version" not in str(exc):
                raise
    return {**nvjitlink_stats(ptx, cc), "assembler": f"nvJitLink {nvjitlink_version()}"}


def ptxas_version(ptxas: str) -> str:
    proc = subprocess.run([ptxas, "--version"], capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else proc.stderr.strip()


def _wheel_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def compile_all(ccs=CCS, dtypes=DTYPES, ptxas: str | None = "auto") -> dict:
    """Compile every CUDA kernel × dtype × cc; assemble with ptxas where found.

    Returns {"nvvm": ..., "ptxas": path or None, "ptxas_version", "rows": [...]}, a row per
    kernel × dtype × cc: kernel, family, dtype, cc, signature, ok, error, ptx_entries,
    compile_s, threads_per_block, and with ptxas registers, spill/stack/shared bytes and
    ``fits_block`` (registers × threads ≤ the block's register file: the launch can run).
    """
    if ptxas == "auto":
        ptxas = shutil.which("ptxas")
    problem = nvvm_problem()
    info = {"nvvm_problem": problem, "ptxas": ptxas,
            "ptxas_version": ptxas_version(ptxas) if ptxas else None,
            "nvjitlink_version": nvjitlink_version(), "rows": []}
    if problem is None:
        try:
            from numba.cuda.cudadrv import nvvm

            info["nvvm_version"] = ".".join(map(str, nvvm.NVVM().get_version()))
        except Exception as exc:  # noqa: BLE001
            info["nvvm_version"] = f"unknown ({type(exc).__name__}: {exc})"
        info["nvvm_wheel"] = _wheel_version("nvidia-nvvm") or _wheel_version(
            "nvidia-cuda-nvcc-cu12")
    jobs = []
    for ref, op, kernel in cuda_kernels():
        for dtype in dtypes:
            try:
                _, kinds, _ = launch_arguments(ref, op, kernel, dtype)
                sig = signature(kinds)
                sig_text = "(" + ", ".join(str(t) for t in sig) + ")"
                threads = threads_per_block(op, dtype)
            except Exception as exc:  # noqa: BLE001
                sig, sig_text, threads = None, f"{type(exc).__name__}: {exc}", None
            for cc in ccs:
                row = dict(kernel=op.kernel, family=op.family, dtype=dtype,
                           cc=f"{cc[0]}.{cc[1]}", signature=sig_text,
                           threads_per_block=threads, ok=False, error=None)
                info["rows"].append(row)
                if sig is None:
                    row["error"] = sig_text
                elif problem is not None:
                    row["error"] = f"NVVM unavailable: {problem}"
                else:
                    jobs.append((row, kernel, sig, cc))
    ptx_of = {}
    for row, kernel, sig, cc in jobs:  # NVVM: one at a time (Numba's compile lock)
        t0 = time.perf_counter()
        try:
            ptx = compile_ptx(kernel, sig, cc)
        except Exception as exc:  # noqa: BLE001  typing, lowering, NVVM errors
            row["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            continue
        row["compile_s"] = time.perf_counter() - t0
        version = re.search(r"^\.version (\S+)", ptx, re.M)
        row["ptx_version"] = version.group(1) if version else None
        row["ptx_entries"] = len(re.findall(r"^\.(?:visible )?\.entry ", ptx, re.M))
        row["ok"] = row["ptx_entries"] >= 1
        if not row["ok"]:
            row["error"] = "no .entry in the PTX"
        ptx_of[id(row)] = ptx

    tool = {"ptxas": ptxas}

    def assemble_row(job):
        row, _, _, cc = job
        if id(row) not in ptx_of:
            return
        try:
            row.update(assemble(ptx_of[id(row)], cc, tool["ptxas"]))
            if row["assembler"] != "ptxas" and tool["ptxas"]:
                info["ptxas_skipped"] = (f"ptxas on PATH ({info['ptxas_version']}) does not "
                                         f"take PTX .version {row['ptx_version']}: "
                                         "assembled by nvJitLink")
                tool["ptxas"] = None  # too old for this PTX: nvJitLink for the rest
        except Exception as exc:  # noqa: BLE001
            row["ok"], row["error"] = False, f"{type(exc).__name__}: {exc}"
            return
        row["fits_block"] = row["registers"] * (row["threads_per_block"] or 0) \
            <= REGISTERS_PER_BLOCK

    if ptxas or info["nvjitlink_version"]:
        for job in jobs:  # nvJitLink is not called from threads
            assemble_row(job)
    return info
