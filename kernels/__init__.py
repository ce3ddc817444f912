"""Numba kernels for the hot element-wise work: fused optimizer updates and batch norm.

Installed as ``accel.kernels`` (the repository folder ``kernels/`` is mapped there by
setuptools' package-dir), never as a top-level ``kernels`` module.

Each kernel has a CPU twin (``*_cpu``: ``@njit(parallel=True, cache=True)``, a ``prange``
loop) and a CUDA twin (``*_cuda``: ``numba.cuda``, a grid-stride loop) with the same
arguments, the same names and the same arithmetic, line for line. The kernels know nothing
about networks or optimizers objects: they take arrays and host-computed scalars.
``accel.dispatch`` picks between them and the ``xp`` reference.

Importing this package compiles nothing and does not import Numba; the submodules compile
each kernel lazily on its first call for a given dtype (and cache the machine code on disk).
"""
