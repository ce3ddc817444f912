"""Backend selection and array helpers."""

import numpy as np
import pytest

from accel import backend as bk


def test_numpy_backend():
    b = bk.get_backend("numpy")
    assert b.name == "numpy" and b.xp is np
    assert bk.get_backend(b) is b
    assert bk.array_module(np.ones(2), [1]) is np
    assert isinstance(bk.to_numpy([1, 2]), np.ndarray)


def test_seeded_rng_is_reproducible(backend):
    a = backend.rng(3).standard_normal(5)
    b = backend.rng(3).standard_normal(5)
    np.testing.assert_array_equal(bk.to_numpy(a), bk.to_numpy(b))


def test_roundtrip_to_device(backend):
    x = np.arange(6.0).reshape(2, 3)
    d = bk.to_device(x, backend)
    assert bk.array_module(d) is backend.xp
    np.testing.assert_array_equal(bk.to_numpy(d), x)
    backend.synchronize()


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend='jax'"):
        bk.get_backend("jax")


def test_env_override(monkeypatch):
    monkeypatch.setenv("ACCEL_BACKEND", "numpy")
    assert bk.get_backend("auto").name == "numpy"
    monkeypatch.setenv("ACCEL_BACKEND", "tpu")
    with pytest.raises(ValueError, match="ACCEL_BACKEND='tpu'"):
        bk.get_backend()


def test_cupy_unavailable_says_how_to_install(monkeypatch):
    monkeypatch.setattr(bk, "_import_cupy", lambda: None)
    monkeypatch.setattr(bk, "_cupy_error", "ModuleNotFoundError: No module named 'cupy'")
    monkeypatch.delitem(bk._cache, "cupy", raising=False)
    with pytest.raises(RuntimeError, match=r"pip install 'accel-dlfs\[cuda12\]'"):
        bk.get_backend("cupy")


@pytest.mark.parametrize("error, said", [
    ("ModuleNotFoundError: No module named 'cupy'", "(CuPy is not installed)"),
    ("CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is insufficient",
     "(CuPy cannot use a GPU here: CUDARuntimeError: cudaErrorInsufficientDriver"),
])
def test_auto_says_why_it_chose_numpy(monkeypatch, capsys, error, said):
    def no_cupy():
        bk._cupy_error = error
        return None

    monkeypatch.setattr(bk, "_import_cupy", no_cupy)
    monkeypatch.delenv("ACCEL_BACKEND", raising=False)
    monkeypatch.delitem(bk._cache, "auto", raising=False)
    assert bk.get_backend("auto").name == "numpy"
    assert f"accel: backend auto -> numpy {said}" in capsys.readouterr().err
    bk._cache.pop("auto", None)


def test_auto_with_cupy_but_no_usable_gpu_is_numpy_and_says_why(capsys, monkeypatch):
    """Where CuPy is installed but sees no GPU (no driver: the GPU rehearsal's machine), the
    real import path, not a stand-in."""
    pytest.importorskip("cupy")
    if bk.cupy_available():
        pytest.skip("CuPy sees a GPU here")
    monkeypatch.delenv("ACCEL_BACKEND", raising=False)
    monkeypatch.delitem(bk._cache, "auto", raising=False)
    assert bk.get_backend("auto").name == "numpy"
    assert "(CuPy cannot use a GPU here: " in capsys.readouterr().err
    bk._cache.pop("auto", None)
