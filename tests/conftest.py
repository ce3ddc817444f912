"""Shared fixtures: one test body runs on every backend (CuPy skipped where it cannot work),
one kernel test body on every target (the CUDA half under Numba's simulator), and
``numpy_device_allclose``, which runs a body on NumPy and on a device and compares."""

import functools
import inspect
import os
from pathlib import Path

import numpy as np
import pytest

from accel import backend as backend_mod
from accel import dispatch

# resolved: tests copy and link the files into temporary folders
DATA_DIR = Path(os.environ.get("ACCEL_DATA_DIR",
                               Path(__file__).parents[2] / "shared" / "data")).resolve()


def _skip_without_cupy():
    if not backend_mod.cupy_available():
        pytest.skip(f"CuPy backend unavailable: {backend_mod.cupy_unavailable_reason()}")


@pytest.fixture(params=["numpy", "cupy"])
def backend(request):
    """The Backend to run the test on; the CuPy run is skipped, with the reason, without a GPU."""
    if request.param == "cupy":
        _skip_without_cupy()
    return backend_mod.get_backend(request.param)


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set ACCEL_DATA_DIR)")
    return DATA_DIR


def assert_close(actual, desired, rtol=1e-7, atol=0.0):
    """allclose on either backend (arrays brought to NumPy)."""
    np.testing.assert_allclose(backend_mod.to_numpy(actual), backend_mod.to_numpy(desired),
                               rtol=rtol, atol=atol)


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a throw-away PostgreSQL database (server started for this session);
    skipped, with the reason, where no server can be started."""
    import pg

    try:
        with pg.server() as url:
            yield url
    except pg.Unavailable as exc:
        pytest.skip(str(exc))


def bn_backward(backward, dy, x, gamma, mean, invstd):
    """(dx, dgamma, dbeta) from a batch-norm backward that writes dgamma and dbeta in place
    (given NaN-filled: every element must be written)."""
    xp = backend_mod.array_module(gamma)
    dgamma, dbeta = xp.full_like(gamma, xp.nan), xp.full_like(gamma, xp.nan)
    dx = backward(dy, x, gamma, mean, invstd, dgamma, dbeta)
    return dx, dgamma, dbeta


# -- kernel tests: one body, two targets


# The CUDA half runs in a process of its own (tests/test_kernels_cuda.py): NUMBA_ENABLE_CUDASIM
# must be set before numba.cuda is imported, and must not leak into the other tests. Elsewhere
# its tests are deselected (run there, not missing here).
CUDA_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
CUDA_HERE = CUDA_SIMULATOR or os.environ.get("ACCEL_CUDA_DEVICE") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: the CUDA half of a two-target kernel test (run "
                            "under Numba's simulator by tests/test_kernels_cuda.py)")


def pytest_collection_modifyitems(config, items):
    if CUDA_HERE:
        return
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        config.hook.pytest_deselected(items=cuda)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]


TARGETS = ("cpu-parallel", "cpu-serial", "cuda")


class Target:
    """Where a kernel test runs an op: ``target(reference, *arrays, scalars=...)`` is
    ``dispatch.call`` forced onto "cpu" or "cuda", checked to have taken that path. Both take
    NumPy arrays: a CUDA launch copies host arrays to the device and back (the simulator uses
    them as they are). ``small(cpu, cuda)``: the value for this target (the simulator runs
    every GPU thread as a Python thread, so the CUDA half takes small sizes)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Target({self.name!r})"

    def __call__(self, reference, *arrays, scalars=(), record=None):
        out = dispatch.call(reference, *arrays, scalars=scalars, target=self.name,
                            record=record)
        kernel = dispatch.OPS[reference].kernel
        assert dispatch.last_path(kernel) == self.name, (kernel, dispatch.last_path())
        return out

    def small(self, cpu, cuda):
        return cuda if self.name == "cuda" else cpu


def on_targets(cpu, cuda):
    """Parameters ``(target, *case)`` for ``parametrize(..., indirect=["target"])``: each CPU
    case on both CPU compiles, each CUDA case (smaller) on CUDA."""
    params = [pytest.param(t, *case, id="-".join(map(str, (t, *case))))
              for t in TARGETS[:2] for case in cpu]
    return params + [pytest.param("cuda", *case, marks=pytest.mark.cuda,
                                  id="-".join(map(str, ("cuda", *case)))) for case in cuda]


@pytest.fixture(scope="session")
def _cuda_launches():
    """Small launches, so that the simulator's few threads wrap around the data: several
    blocks and a grid-stride loop at the test sizes. The tile sizes only under the simulator,
    which reads them at run time (a GPU compile has them built in)."""
    from accel.kernels import batchnorm_cuda, clip_cuda, cuda_jit, guard_cuda, layers_cuda

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cuda_jit, "THREADS_PER_BLOCK", 8)
        mp.setattr(cuda_jit, "MAX_BLOCKS", 2)
        if CUDA_SIMULATOR:
            mp.setattr(batchnorm_cuda, "COLS", 8)
            mp.setattr(batchnorm_cuda, "ROWS", 4)
            mp.setattr(layers_cuda, "COLS", 8)
            mp.setattr(layers_cuda, "ROWS", 4)
            for mod in (guard_cuda, clip_cuda):  # 19 to 40 elements: 3 blocks and a wrap
                mp.setattr(mod, "THREADS", 4)
                mp.setattr(mod, "MAX_BLOCKS", 3)
        yield


@pytest.fixture(params=[*TARGETS[:2], pytest.param("cuda", marks=pytest.mark.cuda)])
def target(request, monkeypatch):
    """The Target of a kernel test: "cpu-parallel" and "cpu-serial" (the two compiles of a CPU
    kernel), "cuda" (deselected unless the simulator or ACCEL_CUDA_DEVICE=1 is on)."""
    if request.param == "cuda":
        request.getfixturevalue("_cuda_launches")
        return Target("cuda")
    monkeypatch.setattr(dispatch, "PARALLEL_MIN", 0 if request.param == "cpu-parallel"
                        else 1 << 30)
    return Target("cpu")


# -- layer and network tests: NumPy against a device


def _device_backend(name):
    if name == "cupy":
        _skip_without_cupy()
        return backend_mod.get_backend("cupy")
    from accel import opcount

    return opcount.backend()


def _on_device(a, device) -> bool:
    if device == "cupy":
        return backend_mod.is_cupy(a)
    from accel import opcount

    return isinstance(a, opcount.CountingArray)


def _leaves(result, path="result"):
    """(path, array) for each array in a result: an array, or tuples, lists, dicts of them."""
    if isinstance(result, dict):
        for k, v in result.items():
            yield from _leaves(v, f"{path}[{k!r}]")
    elif isinstance(result, (tuple, list)):
        for k, v in enumerate(result):
            yield from _leaves(v, f"{path}[{k}]")
    else:
        yield path, result


def _tolerance(tol, dtype):
    return tol[np.dtype(dtype).type] if isinstance(tol, dict) else tol


def numpy_device_allclose(rtol=1e-7, atol=0.0):
    """Run a layer/network test on NumPy and on a device and compare, as CuPy's
    ``numpy_cupy_allclose``: the body takes ``backend`` (or ``xp``) and returns an array, or
    a tuple/list/dict of arrays, computed on it. The test runs as ``[cupy]`` (skipped, with
    the reason, without a GPU) and ``[opcount]`` (``accel.opcount``'s NumPy arrays, as strict
    as CuPy about mixing host and device data: the body and the comparison run everywhere).
    Each array must be on its backend's device, of the same shape and dtype as NumPy's, and
    |device − numpy| ≤ atol + rtol·|numpy| (``rtol``/``atol``: a number, or a dict dtype →
    number picked by the NumPy result's dtype). The body draws its own data: fixtures such
    as ``rng`` are one object for both runs."""

    def decorate(body):
        params = inspect.signature(body).parameters
        takes = "backend" if "backend" in params else "xp"
        if takes not in params:
            raise TypeError(f"{body.__name__} must take a backend or xp argument")

        @functools.wraps(body)
        def test(device, *args, **kwargs):
            backends = {"numpy": backend_mod.get_backend("numpy"),
                        device: _device_backend(device)}
            results = {}
            for name, backend in backends.items():  # the same arguments, a fresh body run
                kwargs[takes] = backend if takes == "backend" else backend.xp
                results[name] = list(_leaves(body(*args, **kwargs)))
            assert [p for p, _ in results["numpy"]] == [p for p, _ in results[device]], \
                "the two runs returned results of different structure"
            for (path, want), (_, got) in zip(results["numpy"], results[device]):
                assert not _on_device(want, "cupy") and not _on_device(want, "opcount"), \
                    f"{path}: the NumPy run returned a {type(want).__name__}"
                assert _on_device(got, device), \
                    f"{path}: the {device} run returned a {type(got).__name__}, not its arrays"
                got = backend_mod.to_numpy(got)
                want = np.asarray(want)
                assert (got.shape, got.dtype) == (want.shape, want.dtype), \
                    f"{path}: {device} gave {got.dtype}{got.shape}, numpy {want.dtype}{want.shape}"
                np.testing.assert_allclose(got, want, rtol=_tolerance(rtol, want.dtype),
                                           atol=_tolerance(atol, want.dtype),
                                           err_msg=f"{path}: {device} against numpy")

        kept = [p for name, p in params.items() if name != takes]
        test.__signature__ = inspect.Signature(
            [inspect.Parameter("device", inspect.Parameter.POSITIONAL_OR_KEYWORD), *kept])
        return pytest.mark.parametrize("device", ["opcount", "cupy"])(test)

    return decorate
