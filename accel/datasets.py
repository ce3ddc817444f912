"""Datasets: MNIST and Fashion-MNIST from IDX files, and generated 2-D toy problems.

``load(name, ...)`` returns ``(x_train, t_train), (x_test, t_test)`` as NumPy arrays; move
them to a device with ``accel.to_device``.

Real data ("mnist", "fashion-mnist") comes from IDX files, gzipped or not. Every file is
checked by the SHA-256 of its *decompressed* bytes, so a re-gzipped copy passes. Each file
is looked for, in this order, in

1. ``data_dir`` when given, else ``$ACCEL_DATA_DIR/<name>/``,
2. the user cache, ``$XDG_CACHE_HOME/accel/<name>/`` (default ``~/.cache/accel/<name>/``),
3. ``/usr/share/datasets/<name>/`` (where Debian's ``dataset-fashion-mnist`` installs),

and a file missing from all of them is downloaded from the public mirrors into the user
cache (with ``pooch`` when it is installed, else ``urllib``): written to a temporary file,
hash-checked, then renamed, so a failed or corrupt download leaves nothing in the cache.
A file that fails its check in ``data_dir``/``$ACCEL_DATA_DIR`` or the system folder raises
CorruptFileError naming it and the expected hash (the file is left alone: it is the user's);
a bad file in the user cache is removed, with a warning, and fetched again. MNIST's test
set alone (as in the project's shared data) loads with ``split="test"``.

Generated data ("moons", "circles", "spiral") is seeded and class-balanced, split into a
train and a test part class by class.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from . import checks, preprocessing

__all__ = [
    "DATASETS",
    "GENERATED",
    "IDX_DATASETS",
    "CLASS_NAMES",
    "CorruptFileError",
    "DatasetNotFoundError",
    "load",
    "load_idx",
    "cache_dir",
    "search_dirs",
    "moons",
    "circles",
    "spiral",
]

# --------------------------------------------------------------------------------------------
# The file table
# --------------------------------------------------------------------------------------------

#: SHA-256 of the decompressed content of every IDX file (``SHA256[name][stem]``).
#:
#: Seven of the eight were computed from the files themselves (the same values are in
#: ../shared/data/SHA256SUMS.raw). The eighth, MNIST ``train-images-idx3-ubyte``, is not in
#: the shared data: its value is the one published, identically, in several independent
#: third-party listings of the decompressed MNIST files -- listings whose values for the
#: other three MNIST files agree with ours -- and it was not recomputed here. For reference,
#: the mirrors' compressed ``train-images-idx3-ubyte.gz`` (9,912,422 bytes) has SHA-256
#: 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 (the value torchvision
#: and TensorFlow Datasets check); this module does not use compressed-file hashes, because
#: re-gzipped copies differ from the mirrors' bytes.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte":
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte":
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte":
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte":
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

#: Base URLs of the public mirrors, tried in order; each serves ``<stem>.gz``.
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

#: The files of each split, as (images stem, labels stem), and the number of samples.
_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}

IDX_DATASETS = ("mnist", "fashion-mnist")
MAX_GENERATED = 10**8  # points of a generated dataset (1.6 GB of float64 pairs)
GENERATED = ("moons", "circles", "spiral")
DATASETS = IDX_DATASETS + GENERATED

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}

#: System-wide dataset folders searched after the user cache (Debian's layout).
SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"),)


class CorruptFileError(ValueError):
    """A data file whose content is not what it should be (hash, gzip stream or IDX layout)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file found in no local folder and not downloadable. ``dataset``, ``file``,
    ``searched`` ((label, folder) pairs) and ``notes`` (why the download did not happen or
    failed) say it in parts, for a command line to word its own message."""

    def __init__(self, message, *, dataset=None, file=None, searched=(), notes=()):
        super().__init__(message)
        self.dataset, self.file = dataset, file
        self.searched, self.notes = list(searched), list(notes)


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def cache_dir(name: str | None = None) -> Path:
    """The user cache: ``$XDG_CACHE_HOME/accel`` (default ``~/.cache/accel``), or its
    ``<name>`` subfolder."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), got {name!r:.100}")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base).expanduser() / "accel"
    return root / name if name else root


def search_dirs(name: str, data_dir=None) -> list[tuple[str, Path]]:
    """The folders searched for dataset ``name``, in order, as (label, folder) pairs."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), got {name!r:.100}")
    checks.optional(checks.path, "data_dir", data_dir)
    dirs = []
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        # Either the dataset's own folder or a root holding <name>/, like ACCEL_DATA_DIR.
        dirs.append(("data_dir", folder / name if (folder / name).is_dir() else folder))
    elif os.environ.get("ACCEL_DATA_DIR"):
        dirs.append(("ACCEL_DATA_DIR", Path(os.environ["ACCEL_DATA_DIR"]).expanduser() / name))
    dirs.append(("user cache", cache_dir(name)))
    dirs.extend(("system", Path(d) / name) for d in SYSTEM_DATA_DIRS)
    return dirs


def _candidates(folder: Path, stem: str):
    """The files in ``folder`` that may hold ``stem``: gzipped first, then raw."""
    for fname in (stem + ".gz", stem):
        path = folder / fname
        if path.is_file():
            yield path


# --------------------------------------------------------------------------------------------
# Reading and checking
# --------------------------------------------------------------------------------------------

# IDX type codes: https://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT"); big-endian data.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path, expected_sha256: str | None = None) -> bytes:
    """The decompressed bytes of ``path`` (gzip detected by its magic bytes)."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        expect = f"; expected SHA-256 of the decompressed content {expected_sha256}" if (
            expected_sha256) else ""
        raise CorruptFileError(
            f"{path}: damaged or truncated gzip stream ({exc}){expect}"
        ) from exc


def _check_hash(path: Path, data: bytes, expected_sha256: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected_sha256:
        raise CorruptFileError(
            f"{path}: SHA-256 of the decompressed content is {got}, expected "
            f"{expected_sha256} (the file is corrupted, truncated or not the right file)"
        )


def _parse_idx(data: bytes, path) -> np.ndarray:
    """Strict IDX parser: zero bytes, type code, rank, dimensions, then exactly the data."""
    if len(data) < 4:
        raise CorruptFileError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise CorruptFileError(
            f"{path}: not an IDX file (magic starts with {data[:2].hex()}, expected 0000)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise CorruptFileError(
            f"{path}: unknown IDX type code 0x{code:02x} (expected one of "
            f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})"
        )
    if ndim == 0:
        raise CorruptFileError(f"{path}: IDX rank 0")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise CorruptFileError(
            f"{path}: IDX header says shape {shape} of {dtype.name} ({expected} bytes in all), "
            f"the file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _sha256(name, value):
    if not (isinstance(value, str) and len(value) == 64 and
            all(c in "0123456789abcdefABCDEF" for c in value)):
        raise ValueError(f"{name} must be 64 hexadecimal digits, got {value!r:.100}")
    return value


def load_idx(path, sha256: str | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped or not), in native byte order.

    With ``sha256``, the decompressed content must have that SHA-256. Any problem raises
    CorruptFileError naming the file.
    """
    path = Path(checks.path("path", path))
    checks.optional(_sha256, "sha256", sha256)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    data = _read_bytes(path, sha256)
    if sha256 is not None:
        _check_hash(path, data, sha256)
    return _parse_idx(data, path)


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into the file ``dest`` (pooch's downloader if installed, else urllib)."""
    try:
        import pooch
    except ImportError:
        pooch = None
    if pooch is not None:
        downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=60)
        downloader(url, str(dest), None)
        return
    import shutil
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "accel-dlfs"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out)


def _download(name: str, stem: str, expected: str) -> tuple[Path, bytes]:
    """Fetch ``stem`` of dataset ``name`` into the user cache; returns (path, content).

    The bytes go to a temporary file beside the target, are hash-checked, and only then
    renamed into place. Raises DatasetNotFoundError with every mirror's failure.
    """
    folder = cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (stem + ".gz")
    failures = []
    for base in MIRRORS[name]:
        url = base + stem + ".gz"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp)
        try:
            print(f"accel: downloading {url}", file=sys.stderr)
            _fetch(url, tmp)
            data = _read_bytes(tmp, expected)
            _check_hash(Path(url), data, expected)
            os.replace(tmp, target)
            return target, data
        except CorruptFileError as exc:
            failures.append(str(exc))
        except Exception as exc:  # network errors of urllib, requests, ...
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetNotFoundError("download failed:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------------------------
# Finding a verified file
# --------------------------------------------------------------------------------------------


def _no_data_message(name: str, stem: str, searched, notes) -> str:
    where = "\n".join(f"  - {label}: {folder}" for label, folder in searched)
    lines = [
        f"dataset {name!r}: file {stem}[.gz] not found. Searched:",
        where,
    ]
    lines += [f"  ! {note}" for note in notes]
    lines += [
        "Options:",
        f"  - set ACCEL_DATA_DIR to a folder holding {name}/{stem}.gz (or pass data_dir=...);",
        "  - on Debian/Ubuntu, `apt install dataset-fashion-mnist` puts Fashion-MNIST in "
        "/usr/share/datasets/fashion-mnist/;",
        f"  - allow the download (download=True, with network access) into {cache_dir(name)};",
        f"  - or use a generated dataset that needs no files: {', '.join(GENERATED)}.",
    ]
    return "\n".join(lines)


def _find(name: str, stem: str, data_dir, download: bool) -> tuple[Path, bytes]:
    """The first verified copy of ``stem``, as (path, decompressed bytes)."""
    expected = SHA256[name][stem]
    searched = search_dirs(name, data_dir)
    notes = []
    for label, folder in searched:
        for path in _candidates(folder, stem):
            try:
                data = _read_bytes(path, expected)
                _check_hash(path, data, expected)
                return path, data
            except CorruptFileError as exc:
                if label != "user cache":
                    raise  # the user's own files: report, never delete
                # Our cache: remove the bad file so nothing wrong stays, then go on.
                path.unlink(missing_ok=True)
                msg = f"{exc}; removed it from the cache"
                warnings.warn(msg, stacklevel=4)
                notes.append(msg)
    if download:
        try:
            return _download(name, stem, expected)
        except DatasetNotFoundError as exc:
            notes.append(str(exc))
    else:
        notes.append("download=False")
    raise DatasetNotFoundError(_no_data_message(name, stem, searched, notes), dataset=name,
                               file=stem, searched=searched, notes=notes)


def _load_split(name, split, data_dir, download):
    images_stem, labels_stem, n = _SPLITS[split]
    ipath, idata = _find(name, images_stem, data_dir, download)
    lpath, ldata = _find(name, labels_stem, data_dir, download)
    images = _parse_idx(idata, ipath)
    labels = _parse_idx(ldata, lpath)
    # The hash already pins the content; these guard against a wrong table entry.
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise CorruptFileError(f"{ipath}: expected uint8 images of shape ({n}, 28, 28), "
                               f"got {images.dtype} {images.shape}")
    if labels.shape != (n,) or labels.dtype != np.uint8 or labels.max() > 9:
        raise CorruptFileError(f"{lpath}: expected {n} uint8 labels in [0, 9]")
    return images, labels


# --------------------------------------------------------------------------------------------
# Generated datasets
# --------------------------------------------------------------------------------------------


def _class_sizes(n_samples: int, n_classes: int) -> list[int]:
    """Sizes that add up to ``n_samples`` and differ by at most one."""
    q, r = divmod(n_samples, n_classes)
    return [q + (k < r) for k in range(n_classes)]


def _check_generated_args(n_samples, noise, n_classes_min, n_classes):
    checks.integer("n_samples", n_samples)
    if n_samples < 2 * n_classes:
        raise ValueError(
            f"n_samples={n_samples} is too small for n_classes={n_classes} "
            f"(need at least {2 * n_classes})"
        )
    if n_samples > MAX_GENERATED:
        raise ValueError(f"n_samples={n_samples} is more than {MAX_GENERATED} points")
    checks.number("noise", noise, low=0)
    if n_classes < n_classes_min:
        raise ValueError(f"n_classes must be >= {n_classes_min}, got {n_classes!r}")


def moons(n_samples: int = 1000, noise: float = 0.1, seed=0):
    """Two interleaving half circles (like scikit-learn's make_moons): x (n, 2), t (n,)."""
    _check_generated_args(n_samples, noise, 2, 2)
    rng = checks.host_rng("seed", seed)
    n0, n1 = _class_sizes(n_samples, 2)
    a0 = np.linspace(0, np.pi, n0)
    a1 = np.linspace(0, np.pi, n1)
    x = np.concatenate([
        np.stack([np.cos(a0), np.sin(a0)], axis=1),
        np.stack([1 - np.cos(a1), 0.5 - np.sin(a1)], axis=1),
    ])
    x += noise * rng.standard_normal(x.shape)
    t = np.repeat(np.arange(2), [n0, n1])
    return x, t


def circles(n_samples: int = 1000, noise: float = 0.05, factor: float = 0.5, seed=0):
    """A small circle (class 1) inside a large one (class 0), radii ``factor`` and 1."""
    _check_generated_args(n_samples, noise, 2, 2)
    checks.fraction("factor", factor)
    rng = checks.host_rng("seed", seed)
    n0, n1 = _class_sizes(n_samples, 2)
    a0 = np.linspace(0, 2 * np.pi, n0, endpoint=False)
    a1 = np.linspace(0, 2 * np.pi, n1, endpoint=False)
    x = np.concatenate([
        np.stack([np.cos(a0), np.sin(a0)], axis=1),
        factor * np.stack([np.cos(a1), np.sin(a1)], axis=1),
    ])
    x += noise * rng.standard_normal(x.shape)
    t = np.repeat(np.arange(2), [n0, n1])
    return x, t


def spiral(n_samples: int = 900, n_classes: int = 3, noise: float = 0.2, seed=0):
    """K interleaved spiral arms, as in CS231n's "Putting it together" notes.

    Arm k: radius r = linspace(0, 1), angle θ = linspace(4k, 4(k+1)) + noise·N(0, 1),
    point (r sin θ, r cos θ).
    """
    checks.integer("n_classes", n_classes)
    _check_generated_args(n_samples, noise, 2, n_classes)
    rng = checks.host_rng("seed", seed)
    xs = []
    sizes = _class_sizes(n_samples, n_classes)
    for k, nk in enumerate(sizes):
        r = np.linspace(0.0, 1.0, nk)
        theta = np.linspace(4.0 * k, 4.0 * (k + 1), nk) + noise * rng.standard_normal(nk)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
    return np.concatenate(xs), np.repeat(np.arange(n_classes), sizes)


def _stratified_split(x, t, test_fraction, rng):
    """Split class by class (so both parts stay balanced), then shuffle each part. Each class
    puts round(test_fraction · its size) samples in the test part: at least one, and at
    least one stays for training (ValueError otherwise)."""
    train_idx, test_idx = [], []
    for k in np.unique(t):
        idx = rng.permutation(np.flatnonzero(t == k))
        n_test = int(round(test_fraction * idx.size))
        if not 1 <= n_test <= idx.size - 1:
            raise ValueError(
                f"test_fraction={test_fraction} of n_samples={t.size} puts {n_test} of class "
                f"{k}'s {idx.size} samples in the test part and {idx.size - n_test} in the "
                "training part; each part needs at least one of every class (raise n_samples "
                "or change test_fraction)")
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return (x[tr], t[tr]), (x[te], t[te])


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


def load(
    name: str,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    dtype=np.float32,
    data_dir=None,
    download: bool = True,
    split: str = "both",
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    n_classes: int | None = None,
    test_fraction: float = 0.2,
    seed=0,
):
    """Load dataset ``name`` (one of ``DATASETS``) as NumPy arrays.

    Returns ``(x_train, t_train), (x_test, t_test)``; with ``split="train"`` or
    ``split="test"`` only that pair ``(x, t)`` (and only its files are needed).

    Images ("mnist", "fashion-mnist"): 60,000 train and 10,000 test samples; ``normalize``
    scales pixels to [0, 1] (else they keep their 0..255 values); ``flatten`` gives shape
    (N, 784), else (N, 1, 28, 28). ``data_dir`` replaces ``$ACCEL_DATA_DIR`` as the first
    place searched (the folder of the files, or a root holding ``<name>/``);
    ``download=False`` never touches the network.

    Generated ("moons", "circles", "spiral"): ``n_samples`` points in all (defaults 1000,
    1000, 900), ``noise``, ``n_classes`` (spiral only, default 3), seeded by ``seed``, split
    class by class with ``test_fraction`` going to the test part. ``normalize`` and
    ``flatten`` do not apply to them (the points are already 2-D and of order 1).

    Inputs have ``dtype`` (float32 or float64); labels are int64 class ids, or one-hot rows
    of ``dtype`` with ``one_hot=True``.
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"unknown dataset name={name!r}; choose one of {', '.join(DATASETS)}")
    name = name.lower()
    split = checks.one_of("split", split, ("both", "train", "test"))
    dt = checks.floating_dtype("dtype", dtype)
    checks.optional(checks.path, "data_dir", data_dir)
    for flag, value in (("normalize", normalize), ("flatten", flatten), ("one_hot", one_hot),
                        ("download", download)):
        checks.boolean(flag, value)

    if name in IDX_DATASETS:
        extra = {"n_samples": n_samples, "noise": noise, "n_classes": n_classes}
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply only to generated datasets, not {name!r}")
        n_cls = 10
        parts = []
        for s in (("train", "test") if split == "both" else (split,)):
            images, labels = _load_split(name, s, data_dir, download)
            x = images.astype(dt)
            if normalize:
                x /= 255.0
            x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, 28, 28)
            parts.append((x, labels.astype(np.int64)))
    else:
        if data_dir is not None:
            raise ValueError(f"data_dir does not apply to the generated dataset {name!r}")
        checks.fraction("test_fraction", test_fraction)
        rng = checks.host_rng("seed", seed)
        kwargs = {}
        if n_samples is not None:
            kwargs["n_samples"] = n_samples
        if noise is not None:
            kwargs["noise"] = noise
        if name == "spiral":
            if n_classes is not None:
                kwargs["n_classes"] = n_classes
        elif n_classes is not None and n_classes != 2:
            raise ValueError(f"{name!r} has 2 classes, got n_classes={n_classes!r}")
        x, t = {"moons": moons, "circles": circles, "spiral": spiral}[name](seed=rng, **kwargs)
        n_cls = int(t.max()) + 1
        train, test = _stratified_split(x.astype(dt), t.astype(np.int64), test_fraction, rng)
        parts = [train, test] if split == "both" else [train if split == "train" else test]

    if one_hot:
        parts = [(x, preprocessing.one_hot(t, n_cls, dt)) for x, t in parts]
    return tuple(parts) if split == "both" else parts[0]
