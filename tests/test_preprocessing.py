"""accel.preprocessing on every backend: train statistics reused on test data, whitening,
one-hot labels, shuffling and the validation split."""

import numpy as np
import pytest
from conftest import assert_close

from accel.backend import to_numpy
from accel.preprocessing import (
    PCAWhitening,
    Standardizer,
    batch_bounds,
    minibatches,
    one_hot,
    shuffle,
    train_val_split,
)


def _data(xp, n=500, d=4, seed=0):
    """Correlated features with different scales and offsets."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) + 2 * np.eye(d)
    x = rng.standard_normal((n, d)) @ mix * np.arange(1, d + 1) + np.arange(d) * 10
    return xp.asarray(x)


def test_standardizer_fit_on_train_reused_on_test(xp):
    x_train, x_test = _data(xp, seed=0), _data(xp, n=200, seed=1) + 3.0
    s = Standardizer().fit(x_train)
    z_train = s.transform(x_train)
    assert_close(z_train.mean(axis=0), np.zeros(4), atol=1e-12)
    assert_close(z_train.std(axis=0), np.ones(4), rtol=1e-12)
    z_test = s.transform(x_test)
    # The test set is standardized with the TRAIN statistics, not its own.
    mu, sigma = to_numpy(x_train).mean(axis=0), to_numpy(x_train).std(axis=0)
    assert_close(z_test, (to_numpy(x_test) - mu) / sigma, rtol=1e-10)
    assert not np.allclose(to_numpy(z_test).mean(axis=0), 0.0, atol=0.1)
    assert_close(s.inverse_transform(z_test), x_test, rtol=1e-12)
    assert_close(Standardizer().fit_transform(x_train), z_train)


def test_standardizer_constant_feature_and_dtype(xp):
    x = xp.asarray(np.c_[np.linspace(0, 1, 10), np.full(10, 7.0)].astype(np.float32))
    s = Standardizer().fit(x)
    z = s.transform(x)
    assert z.dtype == xp.float32
    assert bool(xp.isfinite(z).all())
    assert_close(z[:, 1], np.zeros(10))  # constant feature: centred only (sigma taken as 1)
    test = xp.asarray(np.array([[0.5, 8.0]], dtype=np.float32))
    assert_close(s.transform(test)[:, 1], [1.0])


def test_standardizer_images(xp):
    x = xp.asarray(np.random.default_rng(0).integers(0, 256, (20, 1, 3, 3), dtype=np.uint8))
    z = Standardizer().fit_transform(x)
    assert z.shape == (20, 1, 3, 3) and z.dtype == xp.float64


def test_standardizer_bad_input(xp):
    s = Standardizer()
    with pytest.raises(RuntimeError, match="not fitted"):
        s.transform(xp.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        s.fit(xp.ones(5))
    bad = xp.ones((4, 2))
    bad[1, 1] = xp.nan
    with pytest.raises(ValueError, match="NaN"):
        s.fit(bad)
    s.fit(xp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"feature shape \(3,\)"):
        s.transform(xp.ones((4, 3)))
    with pytest.raises(ValueError, match="eps"):
        Standardizer(eps=-1.0)


@pytest.mark.parametrize("scale", [1e-3, 1e100, 1e200, 1e300])
def test_standardizer_at_every_scale(xp, scale):
    """σ is computed in units of each feature's largest |x|: at 1e200 the squares overflow
    float64, and the old fit turned every value into 0."""
    x = _data(xp, n=50) * scale
    z = Standardizer().fit_transform(x)
    assert_close(z.mean(axis=0), np.zeros(4), atol=1e-12)
    assert_close(z.std(axis=0), np.ones(4), rtol=1e-12)
    assert_close(Standardizer().fit(x).inverse_transform(z), x, rtol=1e-12)


def test_pca_whitening_of_data_too_large_for_float64(xp):
    z = PCAWhitening().fit_transform(_data(xp) * 1e100)  # covariance ~1e200: fine
    assert_close((z.T @ z) / z.shape[0], np.eye(4), atol=1e-6)
    with pytest.raises(ValueError, match="x is too large to whiten.*overflows"):
        PCAWhitening().fit(_data(xp) * 1e200)


@pytest.mark.parametrize("zca", [False, True])
def test_pca_whitening_identity_covariance(xp, zca):
    x = _data(xp, n=2000, d=5)
    w = PCAWhitening(eps=1e-12, zca=zca).fit(x)
    z = w.transform(x)
    zc = to_numpy(z) - to_numpy(z).mean(axis=0)
    cov = zc.T @ zc / len(zc)
    np.testing.assert_allclose(cov, np.eye(5), atol=1e-8)
    if zca:  # ZCA is the whitening closest to the input: symmetric W
        w_np = to_numpy(w._w)
        np.testing.assert_allclose(w_np, w_np.T, atol=1e-10)
    # Test data goes through the train mean and rotation, unchanged.
    x_test = _data(xp, n=50, d=5, seed=3)
    expected = (to_numpy(x_test) - to_numpy(x).mean(axis=0)) @ to_numpy(w._w)
    assert_close(w.transform(x_test), expected, rtol=1e-8, atol=1e-10)


def test_pca_whitening_components_and_eps(xp):
    x = _data(xp, n=1000, d=5)
    z = PCAWhitening(n_components=2).fit_transform(x)
    assert z.shape == (1000, 2)
    var = to_numpy(PCAWhitening(n_components=2).fit(x).variances_)
    assert var[0] >= var[1] > 0
    # eps damps small directions: covariance diag(lambda / (lambda + eps)) < 1
    big = PCAWhitening(eps=1e3).fit(x)
    zc = to_numpy(big.transform(x))
    lam = to_numpy(big.variances_)
    np.testing.assert_allclose(np.var(zc, axis=0), lam / (lam + 1e3), rtol=1e-8)


def test_pca_whitening_bad_input(xp):
    with pytest.raises(ValueError, match="n_components"):
        PCAWhitening(n_components=0)
    with pytest.raises(ValueError, match="n_components=9 exceeds"):
        PCAWhitening(n_components=9).fit(_data(xp))
    with pytest.raises(ValueError, match="at least 2 samples"):
        PCAWhitening().fit(xp.ones((1, 3)))
    w = PCAWhitening().fit(_data(xp))
    with pytest.raises(ValueError, match="3 features"):
        w.transform(xp.ones((2, 3)))
    with pytest.raises(ValueError, match="singular"):
        PCAWhitening(eps=0).fit(xp.ones((5, 2)))


def test_one_hot(xp):
    t = xp.asarray(np.array([2, 0, 1, 2]))
    y = one_hot(t, 3)
    assert y.dtype == xp.float32 and y.shape == (4, 3)
    assert_close(y, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="class id 3"):
        one_hot(xp.asarray(np.array([3])), 3)
    with pytest.raises(ValueError, match="class id -1"):
        one_hot(xp.asarray(np.array([-1, 0])), 3)
    with pytest.raises(TypeError, match="integer"):
        one_hot(xp.asarray(np.array([0.0, 1.0])), 2)
    with pytest.raises(ValueError, match="shape"):
        one_hot(xp.zeros((2, 2), dtype=xp.int64), 2)
    with pytest.raises(ValueError, match="n_classes"):
        one_hot(t, 0)


def test_shuffle_keeps_pairs_and_is_seeded(xp):
    x = xp.arange(20).reshape(10, 2)
    t = xp.arange(10)
    xs, ts = shuffle(x, t, seed=0)
    assert_close(xs[:, 0], 2 * ts)  # rows still match their labels
    assert sorted(to_numpy(ts).tolist()) == list(range(10))
    assert not np.array_equal(to_numpy(ts), np.arange(10))
    xs2, ts2 = shuffle(x, t, seed=0)
    assert_close(ts2, ts)
    assert_close(shuffle(x, seed=0), xs)
    with pytest.raises(ValueError, match="same number of samples"):
        shuffle(x, t[:5])


def test_train_val_split(xp):
    x = xp.asarray(np.arange(1000, dtype=np.float32).reshape(500, 2))
    t = xp.arange(500) % 10
    (xtr, ttr), (xva, tva) = train_val_split(x, t, val_fraction=0.2, seed=0)
    assert xtr.shape == (400, 2) and xva.shape == (100, 2)
    assert ttr.shape == (400,) and tva.shape == (100,)
    rows = np.concatenate([to_numpy(xtr)[:, 0], to_numpy(xva)[:, 0]])
    assert sorted(rows.tolist()) == list(range(0, 1000, 2))  # a partition of the samples
    assert_close(xva[:, 0] / 2 % 10, tva)  # pairs kept
    assert not np.array_equal(to_numpy(xva), to_numpy(x)[400:])  # shuffled, not the tail
    (_, _), (xva2, _) = train_val_split(x, t, val_fraction=0.2, seed=0)
    assert_close(xva2, xva)
    (_, _), (xtail, _) = train_val_split(x, t, val_fraction=0.2, shuffle=False)
    assert_close(xtail, x[400:])


@pytest.mark.parametrize("frac, exc", [(0.0, ValueError), (1.0, ValueError), (-0.1, ValueError),
                                       (1.5, ValueError), (0.001, ValueError), (True, TypeError)])
def test_train_val_split_bad_fraction(xp, frac, exc):
    with pytest.raises(exc, match="val_fraction"):
        train_val_split(xp.ones((10, 2)), xp.zeros(10, dtype=xp.int64), val_fraction=frac)


# -- the course's mini-batch partition


@pytest.mark.parametrize("n, batch_size, sizes", [
    (10, 4, [4, 4, 2]), (12, 4, [4, 4, 4]), (3, 8, [3]), (9, 4, [4, 4, 1]), (1, 1, [1])])
def test_minibatches_sizes_and_coverage(xp, n, batch_size, sizes):
    x = xp.asarray(np.arange(2 * n, dtype=np.float32).reshape(n, 2))
    t = xp.arange(n)
    batches = minibatches(x, t, batch_size, seed=3)
    assert [b[0].shape[0] for b in batches] == sizes  # full batches, then the partial one
    xs = np.concatenate([to_numpy(b[0]) for b in batches])
    ts = np.concatenate([to_numpy(b[1]) for b in batches])
    assert sorted(ts.tolist()) == list(range(n))  # every sample exactly once
    np.testing.assert_array_equal(xs[:, 0], 2 * ts)  # (x, t) pairs kept together
    # the order is the seed's permutation (NumPy's generator, the same on every backend)
    np.testing.assert_array_equal(ts, np.random.default_rng(3).permutation(n))
    again = minibatches(x, None, batch_size, seed=3)
    assert all(np.array_equal(to_numpy(a), to_numpy(b[0])) for a, b in zip(again, batches))


def test_minibatches_merge_a_last_batch_below_min_last(xp):
    x = xp.asarray(np.arange(5, dtype=np.float64)[:, None])
    # the case of a BatchNorm net: 5 samples, batch 2 -> 2 + 3 (not 2 + 2 + 1)
    assert [b.shape[0] for b in minibatches(x, None, 2, seed=0, min_last=2)] == [2, 3]
    assert [b.shape[0] for b in minibatches(x, None, 2, seed=0)] == [2, 2, 1]
    assert batch_bounds(9, 4, min_last=2) == [(0, 4), (4, 9)]
    assert batch_bounds(9, 4, min_last=3) == [(0, 4), (4, 9)]  # tail of 1 < 3: merged
    assert batch_bounds(10, 4, min_last=3) == [(0, 4), (4, 10)]  # tail of 2 < 3: merged
    assert batch_bounds(11, 4, min_last=3) == [(0, 4), (4, 8), (8, 11)]
    assert batch_bounds(1, 4, min_last=2) == [(0, 1)]  # nothing to merge into


def test_minibatches_bad_arguments():
    x, t = np.ones((4, 2)), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(x, t, 0)
    with pytest.raises(TypeError, match="batch_size"):
        minibatches(x, t, 2.5)
    with pytest.raises(ValueError, match="min_last"):
        minibatches(x, t, 2, min_last=0)
    with pytest.raises(ValueError, match="same number of samples"):
        minibatches(x, t[:3], 2)
    with pytest.raises(ValueError, match="seed"):
        minibatches(x, t, 2, seed=-1)
