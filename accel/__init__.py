"""accel: the networks of *Deep Learning from Scratch* ch. 6 and DLS course 2, on NumPy or CuPy."""

from .backend import array_module, get_backend, to_device, to_numpy
from .network import MultiLayerNet

__version__ = "0.1.0"
__all__ = ["array_module", "get_backend", "to_device", "to_numpy", "MultiLayerNet"]
