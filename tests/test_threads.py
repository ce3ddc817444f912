"""The thread policy (accel.threads): a book-size step's products on one BLAS thread, the
library's own count put back for the caller, the same bits whatever the thread count."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import accel
from accel import MultiLayerNet, threads


def _blas_counts():
    return [lib.get_num_threads() for lib in threads._blas()]


def _net():
    return MultiLayerNet(784, [100] * 4, 10, seed=0, backend="numpy")


@pytest.fixture
def two_threads():
    """NumPy's BLAS at 2 threads as the caller's own setting, put back afterwards."""
    libs = threads._blas()
    before = [lib.get_num_threads() for lib in libs]
    for lib in libs:
        lib.set_num_threads(2)
    yield libs
    for lib, n in zip(libs, before):
        lib.set_num_threads(n)


def test_a_book_size_pass_runs_on_one_blas_thread(two_threads):
    """The policy applies when a pass starts (seen from inside a layer's forward pass); a
    large pass gets the caller's count back; blas_threads() fixes the count whatever."""
    rng = np.random.default_rng(0)
    net = _net()
    x, t = net.prepare(rng.standard_normal((128, 784)).astype(np.float32),
                       rng.integers(0, 10, 128))
    seen = []
    layer = net.passes[1]
    real = layer.forward

    def spy(x, train=False):
        seen.append(_blas_counts())
        return real(x, train)

    layer.forward = spy
    net.loss_and_grads(x, t)
    assert seen[-1] == [1] * len(seen[-1])
    big = threads.SERIAL_MAX_FLOP / (2 * net._widest) + 1  # rows of a pass above the line
    net._predict(np.zeros((int(big), 784), np.float32), False)
    assert seen[-1] == [2] * len(seen[-1])  # the caller's count for large products
    with accel.blas_threads(2):
        net.loss_and_grads(x, t)
        assert seen[-1] == [2] * len(seen[-1])  # fixed by the user: the policy steps aside
    with accel.blas_threads(1):
        net._predict(np.zeros((int(big), 784), np.float32), False)
        assert seen[-1] == [1] * len(seen[-1])


def test_a_count_set_by_someone_else_is_the_new_bound(two_threads):
    threads.apply(1e6)
    assert _blas_counts() == [1] * len(two_threads)
    for lib in two_threads:  # the user (threadpoolctl, say) sets 3 in between
        lib.set_num_threads(3)
    threads.apply(threads.SERIAL_MAX_FLOP * 2)
    assert _blas_counts() == [3] * len(two_threads)
    threads.apply(1e6)
    threads.apply(threads.SERIAL_MAX_FLOP * 2)
    assert _blas_counts() == [3] * len(two_threads)


def test_only_numpys_blas_is_touched():
    import numpy

    home = numpy.__file__.rsplit("numpy", 1)[0]
    assert threads._blas() and all(lib.filepath.startswith(home) for lib in threads._blas())
    assert threads.blas_threads_for(2 * 128 * 784 * 100) == 1  # a book-size step
    assert threads.blas_threads_for(threads.SERIAL_MAX_FLOP) is None


def test_blas_threads_refuses_a_bad_count():
    with pytest.raises(ValueError, match="n must be"):
        with accel.blas_threads(0):
            pass


CODE = textwrap.dedent("""
    import sys, numpy as np
    from accel import MultiLayerNet, Trainer, optim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 784)).astype(np.float32); t = rng.integers(0, 10, 300)
    net = MultiLayerNet(784, [100] * 4, 10, seed=0, backend="numpy", batchnorm=True)
    opt = optim.Adam(1e-3)
    xb, tb = net.prepare(x[:128], t[:128])
    for _ in range(3):  # by hand, as the book's scripts do
        opt.update(net.params, net.loss_and_grads(xb, tb)[1])
    Trainer(net, opt, x, t, epochs=2, batch_size=64, seed=0, verbose=False).fit()
    np.save(sys.argv[1], np.concatenate([net.params.flat, net.buffers.flat]))
""")


def test_defaults_give_the_same_bits_with_one_and_two_threads(tmp_path):
    """No setting: the same seed trains to the same bits with 1 and with 2 threads for
    BLAS, OpenMP and Numba, by hand and through the Trainer."""
    for n in (1, 2):
        env = dict(os.environ, **{k: str(n) for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")})
        subprocess.run([sys.executable, "-c", CODE, str(tmp_path / f"{n}.npy")], env=env,
                       check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))


def test_numba_runs_the_parallel_kernels_on_the_workqueue_layer(tmp_path):
    """Unless NUMBA_THREADING_LAYER says otherwise: measured to stall least with a busy
    core (benchmarks/speed/thread_policy.py)."""
    code = ("import numpy as np, numba\nfrom accel import dispatch\n"
            "mod = dispatch.kernels('optim', 'cpu')\np = np.zeros(10, np.float32)\n"
            "mod.KERNELS['sgd'](p, p.copy(), np.ones(2), 0.1, 0.0, 10.0, np.zeros(4, np.int64))\n"
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[-1] == "workqueue"
    env["NUMBA_THREADING_LAYER"] = "omp"  # the user's choice stands
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True)
    if proc.returncode and "omp" in proc.stderr:
        pytest.skip("Numba's OpenMP layer is not available here")
    assert proc.stdout.split()[-1:] == ["omp"]
