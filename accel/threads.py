"""Thread counts that change results: the BLAS library's, and how to pin it.

OpenBLAS (NumPy's BLAS) splits a matrix product's sums by its thread count, so one seed gives
other bits with ``OMP_NUM_THREADS=1`` than with 2, and two runs drift apart. The fused CPU
kernels split their sums by the data's size, not by the thread count, so they do not.
``with blas_threads(1):`` makes a run independent of the thread count, at the cost of the
matrix products' parallelism (measured by ``benchmarks/thread_determinism.py``).
"""

from __future__ import annotations

from . import checks


def blas_threads(n: int = 1):
    """A context manager that limits the BLAS library to ``n`` threads inside its block
    (threadpoolctl's ``threadpool_limits``)."""
    from threadpoolctl import threadpool_limits

    # a C int in the BLAS library: 2**31 - 1 threads at most
    return threadpool_limits(checks.integer("n", n, low=1, high=2**31 - 1), user_api="blas")
