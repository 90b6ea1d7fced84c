"""Datasets: the IDX reader/writer, MNIST from the installed package and from IDX files, XOR."""

import gzip

import numpy as np
import pytest
import torch

from trainwell.datasets import MnistArrays, load_mnist, make_xor, read_idx, write_idx
from trainwell.errors import DataError

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --- IDX ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, code",
    [
        (np.uint8, 0x08),
        (np.int8, 0x09),
        (np.int16, 0x0B),
        (np.int32, 0x0C),
        (np.float32, 0x0D),
        (np.float64, 0x0E),
    ],
)
def test_idx_round_trip_for_each_dtype(tmp_path, dtype, code):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    array = np.array([[info.min, 0, 1], [2, -1 if info.min < 0 else 3, info.max]], dtype=dtype)
    path = tmp_path / "data.idx"
    write_idx(path, array)

    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, code, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_data_is_big_endian_on_disk(tmp_path):
    path = tmp_path / "ints.idx"
    write_idx(path, np.array([1, 256], dtype=np.int32))
    assert path.read_bytes()[8:] == b"\x00\x00\x00\x01\x00\x00\x01\x00"


def test_idx_gz_round_trip_and_gzip_detected_by_magic_not_name(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, array)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), array)

    renamed = tmp_path / "no-suffix"
    renamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_idx_result_is_writable(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros(3, dtype=np.float32))
    back = read_idx(path)
    back[0] = 1.0
    assert back[0] == 1.0


def test_truncated_idx_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.ones((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated"):
        read_idx(path)


def test_truncated_gz_idx_is_a_data_error(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02"))
    with pytest.raises(DataError, match=r"labels\.gz.*truncated"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:-6])  # cut the gzip stream itself
    with pytest.raises(DataError, match=r"labels\.gz"):
        read_idx(path)


def test_bad_magic_is_a_data_error(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"photo\.png.*not an IDX file"):
        read_idx(path)


def test_unknown_dtype_code_is_a_data_error(tmp_path):
    path = tmp_path / "odd.idx"
    path.write_bytes(b"\x00\x00\x0a\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match=r"odd\.idx.*0x0A"):
        read_idx(path)


def test_write_idx_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))


# --- MNIST -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> MnistArrays:
    return load_mnist()


def test_bundled_mnist_shapes_and_dtypes(mnist):
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.test_labels.shape == (10000,)
    assert mnist.train_images.dtype == mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == np.int64


def test_bundled_mnist_labels(mnist):
    for labels in (mnist.train_labels, mnist.test_labels):
        assert set(np.unique(labels)) == set(range(10))
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.train_images.max() == 255  # real pixels, not a blank placeholder


def _write_mnist_dir(directory, compress: dict[str, bool]) -> MnistArrays:
    rng = np.random.default_rng(0)
    arrays = MnistArrays(
        train_images=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        train_labels=np.array([3, 1, 4, 1, 5], dtype=np.int64),
        test_images=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        test_labels=np.array([9, 2], dtype=np.int64),
    )
    for name, filename in MNIST_NAMES.items():
        array = getattr(arrays, name)
        suffix = ".gz" if compress[name] else ""
        write_idx(directory / f"{filename}{suffix}", array.astype(np.uint8))
    return arrays


@pytest.mark.parametrize("mixed", [False, True], ids=["plain", "mixed-gz"])
def test_load_mnist_from_idx_dir(tmp_path, mixed):
    compress = {name: mixed and i % 2 == 0 for i, name in enumerate(MNIST_NAMES)}
    expected = _write_mnist_dir(tmp_path, compress)
    loaded = load_mnist(tmp_path)
    for name in MNIST_NAMES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))
    assert loaded.train_labels.dtype == np.int64


def test_load_mnist_all_gz(tmp_path):
    expected = _write_mnist_dir(tmp_path, dict.fromkeys(MNIST_NAMES, True))
    np.testing.assert_array_equal(load_mnist(str(tmp_path)).test_images, expected.test_images)


def test_load_mnist_names_missing_file_and_directory(tmp_path):
    _write_mnist_dir(tmp_path, dict.fromkeys(MNIST_NAMES, False))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "train-images" not in message


def test_load_mnist_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_rejects_count_mismatch(tmp_path):
    _write_mnist_dir(tmp_path, dict.fromkeys(MNIST_NAMES, False))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8))
    with pytest.raises(DataError, match="5 train images"):
        load_mnist(tmp_path)


def test_load_mnist_rejects_wrong_image_size(tmp_path):
    _write_mnist_dir(tmp_path, dict.fromkeys(MNIST_NAMES, False))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"test images must be uint8 \[N, 28, 28\]"):
        load_mnist(tmp_path)


# --- XOR ---------------------------------------------------------------------


def test_make_xor_shapes_and_labels():
    x, y = make_xor(repeats=50)
    assert x.shape == (200, 2) and y.shape == (200, 1)
    assert x.dtype == y.dtype == torch.float32
    assert set(y.unique().tolist()) == {0.0, 1.0}
    corners = x.round().clamp(0, 1)
    torch.testing.assert_close(y[:, 0], (corners[:, 0] != corners[:, 1]).float())
    assert y.sum().item() == 100  # balanced: two of four corners are 1


def test_make_xor_is_seeded():
    x1, y1 = make_xor(seed=3)
    x2, y2 = make_xor(seed=3)
    x3, _ = make_xor(seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_make_xor_noise_level():
    x, _ = make_xor(repeats=2500, noise=0.1)
    corners = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32).repeat(2500, 1)
    assert (x - corners).std().item() == pytest.approx(0.1, rel=0.05)
    exact, _ = make_xor(repeats=3, noise=0.0)
    assert torch.equal(exact, corners[:12])
