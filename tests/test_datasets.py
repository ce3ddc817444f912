"""accel.datasets: the IDX loader on the real files, bad files, the look-up order, downloads
(faked: these tests never touch the network) and the generated datasets."""

import gzip
import os
import shutil
import struct

import numpy as np
import pytest
from conftest import DATA_DIR

from accel import datasets
from accel.datasets import CorruptFileError, DatasetNotFoundError, load, load_idx

FASHION = datasets.SHA256["fashion-mnist"]
REAL_FETCH = datasets._fetch  # kept before the autouse fixture replaces it


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network, a private user cache, an empty system folder, no ACCEL_DATA_DIR."""
    calls = []

    def no_network(url, dest):
        calls.append(url)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets, "_fetch", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    monkeypatch.delenv("ACCEL_DATA_DIR", raising=False)
    return calls


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST loaded once from the real files (skipped when they are missing)."""
    if not (DATA_DIR / "fashion-mnist").is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set ACCEL_DATA_DIR)")
    return load("fashion-mnist", data_dir=DATA_DIR, download=False)


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------


def test_fashion_mnist_real_files(fashion):
    (x_train, t_train), (x_test, t_test) = fashion
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and t_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(t_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(t_test), [1000] * 10)
    assert list(t_train[:5]) == [9, 0, 0, 3, 0]  # Ankle boot, T-shirt, T-shirt, Dress, T-shirt
    assert list(t_test[:5]) == [9, 2, 1, 1, 6]
    assert datasets.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"


def test_accel_data_dir_and_options(data_dir, monkeypatch):
    monkeypatch.setenv("ACCEL_DATA_DIR", str(data_dir))
    x, t = load("mnist", split="test", flatten=False, normalize=False, one_hot=True,
                dtype=np.float64, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float64
    assert x.max() == 255.0 and x.min() == 0.0 and float(x[0].sum()) == 18454.0
    assert t.shape == (10000, 10) and t.dtype == np.float64
    np.testing.assert_array_equal(t.sum(axis=1), 1.0)
    assert list(t[:5].argmax(axis=1)) == [7, 2, 1, 0, 4]
    np.testing.assert_array_equal(
        t.sum(axis=0), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_mnist_train_labels_by_load_idx(data_dir):
    labels = load_idx(data_dir / "mnist" / "train-labels-idx1-ubyte.gz",
                      sha256=datasets.SHA256["mnist"]["train-labels-idx1-ubyte"])
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert list(labels[:5]) == [5, 0, 4, 1, 9]
    np.testing.assert_array_equal(
        np.bincount(labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def test_mnist_missing_train_images_falls_through(data_dir, monkeypatch, offline):
    """Shared data holds only MNIST's test set: the train images are looked for further on,
    then downloaded; with no network the error names the file and the options."""
    monkeypatch.setenv("ACCEL_DATA_DIR", str(data_dir))
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte") as info:
        load("mnist")
    assert offline and all("train-images-idx3-ubyte" in url for url in offline)
    msg = str(info.value)
    assert "ACCEL_DATA_DIR" in msg and "dataset-fashion-mnist" in msg


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------


def _fashion_test_copy(data_dir, folder, labels_bytes=None, labels_name=None):
    """A fashion-mnist test split in ``folder``: real images, and the labels file as given."""
    folder.mkdir(parents=True, exist_ok=True)
    src = data_dir / "fashion-mnist"
    os.symlink(src / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    if labels_bytes is None:
        shutil.copy(src / "t10k-labels-idx1-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    else:
        (folder / labels_name).write_bytes(labels_bytes)
    return folder


def _real_labels(data_dir):
    return gzip.decompress((data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())


def test_corrupted_file_names_file_and_hash(data_dir, tmp_path):
    raw = bytearray(_real_labels(data_dir))
    raw[100] ^= 0xFF  # one flipped byte, still a well-formed IDX file
    folder = _fashion_test_copy(data_dir, tmp_path / "fm", bytes(raw), "t10k-labels-idx1-ubyte")
    with pytest.raises(CorruptFileError) as info:
        load("fashion-mnist", data_dir=folder, split="test", download=False)
    msg = str(info.value)
    assert str(folder / "t10k-labels-idx1-ubyte") in msg
    assert FASHION["t10k-labels-idx1-ubyte"] in msg
    assert (folder / "t10k-labels-idx1-ubyte").exists()  # the user's own file is left alone


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_names_file_and_hash(data_dir, tmp_path, compressed):
    raw = _real_labels(data_dir)
    if compressed:
        blob, name = gzip.compress(raw)[:-500], "t10k-labels-idx1-ubyte.gz"
    else:
        blob, name = raw[:-500], "t10k-labels-idx1-ubyte"
    folder = _fashion_test_copy(data_dir, tmp_path / "fm", blob, name)
    with pytest.raises(CorruptFileError) as info:
        load("fashion-mnist", data_dir=folder, split="test", download=False)
    assert str(folder / name) in str(info.value)
    assert FASHION["t10k-labels-idx1-ubyte"] in str(info.value)


def test_regzipped_copy_passes(data_dir, tmp_path):
    blob = gzip.compress(_real_labels(data_dir), compresslevel=1, mtime=0)
    folder = _fashion_test_copy(data_dir, tmp_path / "fm", blob, "t10k-labels-idx1-ubyte.gz")
    x, t = load("fashion-mnist", data_dir=folder, split="test", download=False)
    assert x.shape == (10000, 784) and list(t[:5]) == [9, 2, 1, 1, 6]


def test_corrupt_cache_file_is_removed(data_dir, tmp_path):
    raw = bytearray(_real_labels(data_dir))
    raw[-1] ^= 0x01
    cache = datasets.cache_dir("fashion-mnist")
    _fashion_test_copy(data_dir, cache, gzip.compress(bytes(raw)), "t10k-labels-idx1-ubyte.gz")
    with pytest.warns(UserWarning, match="removed it from the cache"):
        with pytest.raises(DatasetNotFoundError) as info:
            load("fashion-mnist", split="test", download=False)
    assert FASHION["t10k-labels-idx1-ubyte"] in str(info.value)
    assert str(cache / "t10k-labels-idx1-ubyte.gz") in str(info.value)
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()


# ---------------------------------------------------------------------------------------------
# No files, downloads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("download", [False, True])
def test_no_files_no_network_error_names_options(download, offline):
    with pytest.raises(DatasetNotFoundError) as info:
        load("fashion-mnist", download=download)
    msg = str(info.value)
    for needle in ("ACCEL_DATA_DIR", "dataset-fashion-mnist", "moons", "circles", "spiral",
                   "train-images-idx3-ubyte"):
        assert needle in msg
    assert bool(offline) == download  # download=False never calls the fetcher
    assert not any(datasets.cache_dir("fashion-mnist").glob("*"))


def test_corrupt_download_leaves_nothing_in_cache(data_dir, monkeypatch):
    raw = bytearray(_real_labels(data_dir))
    raw[50] ^= 0xFF
    urls = []

    def fake_fetch(url, dest):
        urls.append(url)
        with open(dest, "wb") as f:
            f.write(gzip.compress(bytes(raw)))

    monkeypatch.setattr(datasets, "_fetch", fake_fetch)
    with pytest.raises(DatasetNotFoundError) as info:
        load("fashion-mnist", split="test")
    assert urls and urls[0].startswith(datasets.MIRRORS["fashion-mnist"][0])
    assert FASHION["t10k-images-idx3-ubyte"] in str(info.value)
    assert list(datasets.cache_dir("fashion-mnist").iterdir()) == []  # no file, no .part


def test_good_download_is_cached_and_reused(data_dir, monkeypatch):
    src = data_dir / "fashion-mnist"
    urls = []

    def fake_fetch(url, dest):
        urls.append(url)
        shutil.copy(src / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(datasets, "_fetch", fake_fetch)
    x, t = load("fashion-mnist", split="test")
    assert len(urls) == 2 and x.shape == (10000, 784)
    cache = datasets.cache_dir("fashion-mnist")
    assert sorted(p.name for p in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    x2, t2 = load("fashion-mnist", split="test")  # from the cache now
    assert len(urls) == 2
    np.testing.assert_array_equal(t, t2)


def test_system_folder_is_searched(data_dir, tmp_path):
    _fashion_test_copy(data_dir, tmp_path / "system" / "fashion-mnist")
    x, t = load("fashion-mnist", split="test", download=False)
    assert x.shape == (10000, 784)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_DATA_DIR", str(tmp_path / "env"))
    labels = [label for label, _ in datasets.search_dirs("mnist")]
    folders = [folder for _, folder in datasets.search_dirs("mnist")]
    assert labels == ["ACCEL_DATA_DIR", "user cache", "system"]
    assert folders == [tmp_path / "env" / "mnist", tmp_path / "cache" / "accel" / "mnist",
                       tmp_path / "system" / "mnist"]


# ---------------------------------------------------------------------------------------------
# The IDX parser
# ---------------------------------------------------------------------------------------------


def _idx(code, shape, payload):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_load_idx_roundtrip_types(tmp_path):
    a = (np.arange(24) - 5).astype(">i2").reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    path.write_bytes(_idx(0x0B, a.shape, a.tobytes()))
    got = load_idx(path)
    np.testing.assert_array_equal(got, a)
    assert got.dtype == np.int16 and got.dtype.isnative
    f = np.linspace(-1, 1, 5).astype(">f8")
    (tmp_path / "f.idx.gz").write_bytes(gzip.compress(_idx(0x0E, (5,), f.tobytes())))
    np.testing.assert_array_equal(load_idx(tmp_path / "f.idx.gz"), f)


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (_idx(0x07, (2,), b"\x00\x00"), "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (_idx(0x08, (2, 3), b"\x00" * 5), r"shape \(2, 3\)"),
        (_idx(0x08, (2, 3), b"\x00" * 7), "has 19 bytes"),
    ],
)
def test_load_idx_strict(tmp_path, blob, match):
    path = tmp_path / "bad.idx"
    path.write_bytes(blob)
    with pytest.raises(CorruptFileError, match=match) as info:
        load_idx(path)
    assert str(path) in str(info.value)


def test_load_idx_hash_and_missing(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(_idx(0x08, (3,), b"\x01\x02\x03"))
    with pytest.raises(CorruptFileError, match="0" * 64):
        load_idx(path, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="nope.idx"):
        load_idx(tmp_path / "nope.idx")


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------


def test_unknown_name_lists_options():
    with pytest.raises(ValueError, match="'cifar10'") as info:
        load("cifar10")
    for name in datasets.DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"name": "moons", "split": "val"}, ValueError, "split='val'"),
        ({"name": "moons", "dtype": np.int32}, TypeError, "dtype"),
        ({"name": "mnist", "n_samples": 100}, ValueError, "n_samples"),
        ({"name": "moons", "test_fraction": 1.0}, ValueError, "test_fraction"),
        ({"name": "moons", "n_samples": 3}, ValueError, "n_samples=3"),
        ({"name": "moons", "noise": -1}, ValueError, "noise"),
        ({"name": "circles", "n_classes": 3}, ValueError, "n_classes=3"),
        ({"name": "spiral", "seed": "x"}, TypeError, "seed"),
        # a part that would be empty (or lack a class): round(0.1 * 2) = 0 test samples
        ({"name": "moons", "n_samples": 4, "test_fraction": 0.1}, ValueError,
         "test_fraction=0.1 of n_samples=4 puts 0 of class 0's 2 samples in the test part"),
        ({"name": "spiral", "n_samples": 30, "test_fraction": 0.95}, ValueError,
         "10 samples in the test part and 0 in the training part"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load(**kwargs)


# ---------------------------------------------------------------------------------------------
# Generated datasets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, n_classes", [("moons", 2), ("circles", 2), ("spiral", 3)])
def test_generated_seeded_balanced(name, n_classes):
    (x_tr, t_tr), (x_te, t_te) = load(name, seed=1)
    (x_tr2, t_tr2), (x_te2, t_te2) = load(name, seed=1)
    (x_tr3, _), _ = load(name, seed=2)
    np.testing.assert_array_equal(x_tr, x_tr2)
    np.testing.assert_array_equal(t_te, t_te2)
    assert not np.array_equal(x_tr, x_tr3)
    assert x_tr.shape[1] == 2 and x_tr.dtype == np.float32 and t_tr.dtype == np.int64
    n = len(t_tr) + len(t_te)
    assert abs(len(t_te) - 0.2 * n) <= n_classes
    for t in (t_tr, t_te):
        counts = np.bincount(t, minlength=n_classes)
        assert len(counts) == n_classes and counts.max() - counts.min() <= 1
    assert np.isfinite(x_tr).all() and np.abs(x_tr).max() < 5


def test_spiral_options():
    (x, t), (xt, tt) = load("spiral", n_samples=500, n_classes=5, noise=0.0, one_hot=True,
                            dtype=np.float64, test_fraction=0.1, seed=0)
    assert x.shape == (450, 2) and xt.shape == (50, 2) and x.dtype == np.float64
    assert t.shape == (450, 5) and np.array_equal(t.sum(axis=0), [90] * 5)
    assert np.linalg.norm(x, axis=1).max() <= 1.0 + 1e-12  # radii in [0, 1] without noise
    x_only, t_only = load("spiral", split="train", n_samples=500, n_classes=5, noise=0.0,
                          dtype=np.float64, test_fraction=0.1, seed=0)
    np.testing.assert_array_equal(x_only, x)


def test_generator_functions():
    x, t = datasets.moons(n_samples=101, noise=0.0, seed=0)
    assert x.shape == (101, 2) and list(np.bincount(t)) == [51, 50]
    x, t = datasets.circles(n_samples=200, noise=0.0, factor=0.3, seed=0)
    r = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(r[t == 0], 1.0)
    np.testing.assert_allclose(r[t == 1], 0.3)


@pytest.fixture
def local_mirror(data_dir, monkeypatch):
    """An HTTP server on localhost serving the real files as the fashion-mnist mirror."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(data_dir / "fashion-mnist"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setattr(datasets, "MIRRORS", {"fashion-mnist": ("http://127.0.0.1:9/", url)})
    yield url
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("use_pooch", [True, False])
def test_real_fetch_from_local_mirror(local_mirror, monkeypatch, use_pooch):
    """The real fetcher (pooch, or urllib without it) against a localhost server: the first
    mirror refuses the connection, the second serves the files."""
    import sys

    if use_pooch:
        pytest.importorskip("pooch")
    else:
        monkeypatch.setitem(sys.modules, "pooch", None)  # import pooch -> ImportError
    monkeypatch.setattr(datasets, "_fetch", REAL_FETCH)
    x, t = load("fashion-mnist", split="test")
    assert x.shape == (10000, 784) and list(t[:5]) == [9, 2, 1, 1, 6]
    assert sorted(p.name for p in datasets.cache_dir("fashion-mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
