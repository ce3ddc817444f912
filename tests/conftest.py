"""Shared fixtures: one test body runs on every backend (CuPy skipped where it cannot work)."""

import os
from pathlib import Path

import numpy as np
import pytest

from accel import backend as backend_mod

# resolved: tests copy and link the files into temporary folders
DATA_DIR = Path(os.environ.get("ACCEL_DATA_DIR",
                               Path(__file__).parents[2] / "shared" / "data")).resolve()


@pytest.fixture(params=["numpy", "cupy"])
def backend(request):
    """The Backend to run the test on; the CuPy run is skipped, with the reason, without a GPU."""
    if request.param == "cupy" and not backend_mod.cupy_available():
        pytest.skip(f"CuPy backend unavailable: {backend_mod.cupy_unavailable_reason()}")
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
