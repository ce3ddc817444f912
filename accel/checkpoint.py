"""Checkpoint files: a ``.npz`` archive of arrays plus a JSON header, written atomically.

What is saved is a *state*: the nested dict an object's ``state_dict()`` returns (network,
optimizer and trainer share that protocol, with ``load_state_dict`` to restore). Arrays may
sit anywhere in it; everything else must be JSON data.

Layout (format version 2). The file is a zip archive that ``numpy.load`` can open:

- ``header.json``: ``{"format": "accel-checkpoint", "format_version": 2, "kind": ...,
  "accel_version": ..., "state": {...}, "arrays": {name: {"shape": [...], "dtype": "<f4",
  "crc32": ...}}}``, where ``state`` is the state without its arrays;
- ``<name>.npy`` for every array, ``name`` being its key path in the state joined by "/"
  (e.g. ``network/params/W1``), stored uncompressed, C order. ``load`` puts each array back
  at its path.

Arrays are always NumPy arrays in the file and nothing in it names a backend, so a file
saved from CuPy loads on NumPy and the other way round. Files of format version 1 (accel
0.1.0, sections at the top level) load through the same rule.

``save`` writes to a temporary file in the target's folder, fsyncs it, then renames it over
the target (``os.replace``), so a crash or Ctrl-C in the middle of a save leaves the previous
file intact. ``load`` checks everything it reads: the zip structure and CRCs, the header's
format and version, every array's presence, shape, dtype and CRC-32. Any problem raises
``CheckpointError`` (a ValueError) whose message names the file and the problem; a file
written by a newer accel (a higher format version) is refused with a message saying so.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import struct
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no directory lock there
    fcntl = None

import numpy as np

from . import checks
from .backend import array_module, to_numpy

FORMAT = "accel-checkpoint"
FORMAT_VERSION = 2

HEADER_NAME = "header.json"
LOCK_NAME = ".lock"  # in a checkpoint folder: held (flock) by the run writing into it
MAX_HEADER_BYTES = 16 * 2**20
_NPY_HEADER_SLACK = 2**16 + 16  # an .npy header is at most 64 KiB
_ARRAY_KINDS = "biuf"  # bool, ints, floats: never objects (no pickles in a checkpoint)

__all__ = ["CheckpointError", "DirectoryInUseError", "DirectoryLock", "FORMAT",
           "FORMAT_VERSION", "fingerprint", "save", "load", "restore", "rng_state",
           "set_rng_state"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, corrupted, not a checkpoint, written
    by a newer version, or holding something else than what is asked of it."""


class DirectoryInUseError(RuntimeError):
    """Another run holds the lock of a checkpoint folder."""


# -- writing


def jsonable(value):
    """``value`` with NumPy scalars and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot store {value!r} ({type(value).__name__}) in a checkpoint header")


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(a).cast("B")) if a.size else 0


def _is_array(v) -> bool:
    return hasattr(v, "dtype") and hasattr(v, "shape") and not isinstance(v, np.generic)


def split_arrays(state: dict, prefix: str = "") -> tuple[dict, dict]:
    """(the state without its arrays, {key path joined by "/": array})."""
    rest, arrays = {}, {}
    for k, v in state.items():
        k = str(k)
        if "/" in k:
            raise ValueError(f"state key {prefix + k!r} contains '/', which separates paths")
        if isinstance(v, dict):
            rest[k], more = split_arrays(v, f"{prefix}{k}/")
            arrays.update(more)
        elif _is_array(v):
            arrays[prefix + k] = v
        else:
            rest[k] = v
    return rest, arrays


def place_arrays(state: dict, arrays: dict, path) -> dict:
    """Put each array back into ``state`` at its key path (the inverse of ``split_arrays``)."""
    for name, a in arrays.items():
        *parents, leaf = name.split("/")
        node = state
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"{path}: array {name!r} lies under a value that is not "
                                      "a section")
        if isinstance(node.get(leaf), dict):
            raise CheckpointError(f"{path}: array {name!r} would replace a section")
        node[leaf] = a
    return state


def save(path, state: dict, kind: str, *, lock: DirectoryLock | None = None) -> Path:
    """Write ``state`` (a nested dict of JSON data and arrays on any backend) to ``path``,
    atomically, as a checkpoint of ``kind`` ("network", "trainer", ...). Returns the path.

    A folder that has a lock file (a Trainer's checkpoint folder) is written only under its
    lock: ``lock`` when the caller holds it, else taken for this write (DirectoryInUseError
    when another run holds it)."""
    path = Path(checks.path("path", path))
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict (a state_dict()), got {state!r:.100}")
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a folder: give a file name in it, e.g. "
                                f"{str(path / 'checkpoint.npz')!r}")
    folder = path.parent if str(path.parent) else Path(".")
    if (lock is None or not lock.holds(folder)) and (folder / LOCK_NAME).exists():
        with DirectoryLock(folder) as held:
            return save(path, state, kind, lock=held)
    return _save(path, folder, state, kind)


def _save(path: Path, folder: Path, state: dict, kind: str) -> Path:
    from . import __version__

    rest, arrays = split_arrays(state)
    host = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(to_numpy(a))
        if a.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"array {name!r} has dtype {a.dtype}: only numbers can be saved")
        host[name] = a
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "accel_version": __version__,
            "kind": kind, "state": jsonable(rest),
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str, "crc32": _crc32(a)}
                       for name, a in host.items()}}
    blob = json.dumps(full, allow_nan=True, separators=(",", ":")).encode("utf-8")

    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr(HEADER_NAME, blob)
                for name, a in host.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file honours the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fingerprint(*arrays) -> int:
    """CRC-32 of the arrays' bytes, shapes and dtypes (host copies): cheap evidence that a
    resumed run trains on the same data."""
    crc = 0
    for a in arrays:
        a = np.ascontiguousarray(to_numpy(a))
        crc = zlib.crc32(f"{a.dtype.str}{a.shape}".encode(), crc)
        crc = zlib.crc32(memoryview(a).cast("B"), crc) if a.size else crc
    return crc


class DirectoryLock:
    """An exclusive lock on a checkpoint folder while a run writes into it.

    ``fcntl.flock`` on ``<folder>/.lock``: the kernel releases it when the process exits or
    crashes, so a lock is never left behind; a second run (another process, or another
    Trainer in this one) is refused with DirectoryInUseError. On entry, temporary files that
    a killed save left behind (``.<name>.*.tmp``) are removed: no other writer can be at work.
    While a folder has the lock file, every ``save`` into it goes through the lock. A clean
    exit removes the file (a killed run leaves it, unheld, for the next run to take).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._fd = None

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise DirectoryInUseError(
                    f"checkpoint folder {str(self.folder)!r} is in use by another run "
                    f"({holder}); give each run its own folder, or wait for that one to "
                    "end") from None
            if self._is_the_lock_file(fd):
                break
            # the holder removed the file as it ended, after we opened it: the lock we got
            # is on a file no one else will open; take the folder's current one
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
                  0)
        self._fd = fd
        for stale in self.folder.glob(".*.npz.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        return self

    def holds(self, folder) -> bool:
        """True while this lock is held and ``folder`` is its folder (links followed)."""
        if self._fd is None:
            return False
        try:
            return os.path.samefile(self.folder, folder)
        except OSError:
            return False

    def _is_the_lock_file(self, fd) -> bool:
        """True when ``fd`` is the file now at ``<folder>/.lock`` (same inode)."""
        try:
            here = os.stat(self.folder / LOCK_NAME)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def __exit__(self, *exc):
        if self._fd is not None:
            if fcntl is not None:  # removed while still held: no one can have it open locked
                try:
                    os.unlink(self.folder / LOCK_NAME)
                except OSError:
                    pass
            os.close(self._fd)  # releases the flock
            self._fd = None
        return False


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading


def load(path) -> dict:
    """The header of the checkpoint at ``path`` ("kind", "format_version", "accel_version",
    ...), with its ``state`` holding every array (NumPy) back at its place.

    Raises FileNotFoundError when there is no file, CheckpointError for anything wrong
    inside it."""
    path = Path(checks.path("path", path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        try:
            return _read(f, path)
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                ValueError, KeyError, TypeError, IndexError, OverflowError, struct.error,
                NotImplementedError, RuntimeError) as exc:
            # not MemoryError: every size is checked against the file's before allocating,
            # so running out of memory is the machine's state, not a fault of the file
            raise CheckpointError(
                f"{path}: truncated or corrupted checkpoint ({type(exc).__name__}: {exc})"
            ) from exc


def _read(f, path: Path) -> dict:
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    if not zipfile.is_zipfile(f):
        raise CheckpointError(
            f"{path}: not a zip/.npz archive (truncated, corrupted, or not a checkpoint)")
    f.seek(0)
    with zipfile.ZipFile(f) as zf:
        names = set(zf.namelist())
        if HEADER_NAME not in names:
            raise CheckpointError(f"{path}: no {HEADER_NAME} inside, so not an accel checkpoint"
                                  " (a plain .npz?)")
        _check_stored(zf, path)
        info = zf.getinfo(HEADER_NAME)
        if info.file_size > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: {HEADER_NAME} claims {info.file_size} bytes, more "
                                  f"than a checkpoint header can have ({MAX_HEADER_BYTES})")
        try:
            header = json.loads(zf.read(HEADER_NAME).decode("utf-8"))
        except RecursionError:
            raise CheckpointError(f"{path}: {HEADER_NAME} is nested too deeply to be a "
                                  "checkpoint header") from None
        _check_header(header, path)
        arrays = {name: _read_array(zf, names, name, spec, path)
                  for name, spec in header.pop("arrays").items()}
    if header["format_version"] == 1:  # sections at the top level
        header["state"] = {k: header.pop(k) for k in ("network", "optimizer", "trainer")
                           if k in header}
    place_arrays(header["state"], arrays, path)
    return header


def _check_stored(zf, path) -> None:
    """Every member stored uncompressed, as ``save`` writes them: then no member can inflate
    to more bytes than the file holds (a crafted archive cannot allocate gigabytes)."""
    size = zf.fp.seek(0, os.SEEK_END)
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                or info.file_size > size:
            raise CheckpointError(f"{path}: member {info.filename!r} is compressed or claims "
                                  f"{info.file_size} bytes; accel checkpoints store members "
                                  "uncompressed")


def _check_header(header, path) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: header format is {got!r}, expected {FORMAT!r}; "
                              "not an accel checkpoint")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: bad format_version {version!r} in the header")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} was written by a newer accel "
            f"({header.get('accel_version', '?')}); this accel reads versions up to "
            f"{FORMAT_VERSION}: upgrade accel to load it")
    if not isinstance(header.get("arrays"), dict):
        raise CheckpointError(f"{path}: header has no 'arrays' table")
    if version > 1 and not isinstance(header.get("state"), dict):
        raise CheckpointError(f"{path}: header has no 'state' section")


def _read_array(zf, names, name, spec, path) -> np.ndarray:
    where = f"{path}: array {name!r}"
    if not isinstance(spec, dict):
        raise CheckpointError(f"{where}: bad entry {spec!r} in the header")
    shape, dtype, crc = spec.get("shape"), spec.get("dtype"), spec.get("crc32")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and d >= 0 for d in shape)):
        raise CheckpointError(f"{where}: bad shape {shape!r} in the header")
    if not isinstance(dtype, str) or not isinstance(crc, int):
        raise CheckpointError(f"{where}: bad dtype or crc32 in the header")
    dt = np.dtype(dtype)
    if dt.kind not in _ARRAY_KINDS:
        raise CheckpointError(f"{where}: dtype {dt} is not allowed in a checkpoint")
    nbytes = math.prod(shape) * dt.itemsize
    member = name + ".npy"
    if member not in names:
        raise CheckpointError(f"{where} is listed in the header but missing from the file")
    info = zf.getinfo(member)
    if info.file_size > nbytes + _NPY_HEADER_SLACK:
        raise CheckpointError(f"{where}: {info.file_size} bytes stored for {nbytes} bytes of "
                              "data")
    raw = zf.read(member)  # checks the zip CRC
    bio = io.BytesIO(raw)
    major, _ = np.lib.format.read_magic(bio)
    if major == 1:
        npy_shape, fortran, npy_dtype = np.lib.format.read_array_header_1_0(bio)
    elif major == 2:
        npy_shape, fortran, npy_dtype = np.lib.format.read_array_header_2_0(bio)
    else:
        raise CheckpointError(f"{where}: unsupported .npy version {major}")
    if tuple(npy_shape) != tuple(shape) or npy_dtype != dt or fortran:
        raise CheckpointError(f"{where}: stored as {npy_dtype} {tuple(npy_shape)}, the header "
                              f"says {dt} {tuple(shape)}")
    data = raw[bio.tell():]
    if len(data) != nbytes:
        raise CheckpointError(f"{where}: {len(data)} bytes of data, expected {nbytes} "
                              "(truncated?)")
    a = np.frombuffer(bytearray(data), dtype=dt).reshape(shape)
    if _crc32(a) != crc:
        raise CheckpointError(f"{where}: CRC-32 mismatch, the data is corrupted")
    return a


def section(header: dict, key: str, path, what: str) -> dict:
    """``header["state"][key]`` as a dict, or CheckpointError saying the file holds no
    ``what``."""
    value = header["state"].get(key)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: holds no {what} (a {header.get('kind', '?')!r} "
                              "checkpoint)")
    return value


def restore(obj, state: dict, path, **kwargs) -> None:
    """``obj.load_state_dict(state, **kwargs)``, its ValueError/TypeError/KeyError turned
    into a CheckpointError naming the file."""
    try:
        obj.load_state_dict(state, **kwargs)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CheckpointError(f"{path}: {detail}") from exc


# -- random generator state


def rng_state(rng) -> dict | None:
    """The state of a backend generator: {"bit_generator": name, "state": ...}, where the
    state is NumPy's small JSON dict, or for a device (CuPy) generator its device array."""
    if rng is None:
        return None
    bg = rng.bit_generator
    if isinstance(rng, np.random.Generator):
        return {"bit_generator": type(bg).__name__, "state": bg.state}
    state = getattr(bg, "_state", None)
    if state is None:
        return None
    return {"bit_generator": type(bg).__name__, "state": state.copy()}


def set_rng_state(rng, saved) -> bool:
    """Restore what ``rng_state`` returned; False (nothing changed) when the saved state is
    of another backend or generator type."""
    if rng is None or not isinstance(saved, dict):
        return False
    bg = rng.bit_generator
    if saved.get("bit_generator") != type(bg).__name__:
        return False
    state = saved.get("state")
    if isinstance(rng, np.random.Generator):
        if not isinstance(state, dict):
            return False
        bg.state = state
        return True
    device = getattr(bg, "_state", None)
    if device is None or not _is_array(state) or state.shape != device.shape or \
            state.dtype != device.dtype:
        return False
    device[...] = array_module(device).asarray(state)
    return True
