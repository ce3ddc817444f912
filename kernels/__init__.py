"""Numba kernels for the hot element-wise work: fused optimizer updates and batch norm.

Installed as ``accel.kernels`` (the repository folder ``kernels/`` is mapped there by
setuptools' package-dir), never as a top-level ``kernels`` module.

Each kernel has a CPU twin (``*_cpu``: ``@njit(parallel=True, cache=True)``) and a CUDA twin
(``*_cuda``: ``numba.cuda``) with the same arguments (the ``accel.functional`` reference's
arrays, its scalars, then the arrays it fills), the same names and the same formulas. The
optimizer twins read line for line alike (a ``prange`` loop on the CPU, a grid-stride loop on
the GPU; a test compares their source). The batch-norm twins compute the same sums but walk
memory as each device likes it, so their loops differ: see the modules' docstrings. The
kernels know nothing about networks or optimizer objects: they take arrays and host-computed
scalars.

Every module exports its kernels the same way: ``KERNELS``, name → kernel; a CPU module also
``SERIAL`` (the same kernels compiled without threads, for small arrays), a CUDA module
``launch(name, *arrays)`` → (blocks, threads). ``accel.dispatch`` pairs them with their
references and picks the path.

Importing this package compiles nothing and does not import Numba; the submodules compile
each kernel lazily on its first call for a given dtype (and cache the machine code on disk).
"""
