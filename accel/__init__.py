"""accel: the networks of *Deep Learning from Scratch* ch. 6 and DLS course 2, on NumPy or CuPy.

Importing accel compiles nothing: the Numba kernels compile (or load from cache) on first use.
"""

from . import (
    datasets,
    ewma,
    gradcheck,
    initializers,
    layers,
    optim,
    preprocessing,
    schedules,
)
from .backend import array_module, get_backend, to_device, to_numpy
from .early_stopping import EarlyStopping
from .history import History
from .network import MultiLayerNet
from .threads import blas_threads
from .trainer import Trainer

__version__ = "0.3.0"
__all__ = [
    "array_module", "blas_threads", "get_backend", "to_device", "to_numpy", "MultiLayerNet",
    "Trainer", "EarlyStopping", "History", "datasets", "ewma", "gradcheck", "initializers",
    "layers", "optim", "preprocessing", "schedules", "search",
]


def __getattr__(name):
    # accel.search imports Optuna (a third of a second): only when it is first used
    if name == "search":
        import importlib

        return importlib.import_module(".search", __name__)
    raise AttributeError(f"module 'accel' has no attribute {name!r}")
