"""MNIST-style IDX files: happy paths (raw, gzip, folder, single file) and every validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from poisonlab.data import load_dataset
from poisonlab.data.idx import FASHION_NAMES, IMAGES_MAGIC, LABELS_MAGIC, load_idx, read_idx
from poisonlab.errors import DataError
from tests.data.conftest import idx_bytes, mnist_folder, write_idx


def test_folder_train_and_test_parts(mnist_dir: Path) -> None:
    train = load_dataset(mnist_dir)
    test = load_dataset(mnist_dir, part="test")
    assert (len(train), len(test)) == (12, 5)
    assert train.shape == (1, 28, 28)
    assert train.class_names == tuple("0123456789")
    assert train.ids[3] == "train-images-idx3-ubyte.gz#3"
    assert test.ids[0] == "t10k-images-idx3-ubyte.gz#0"
    assert train.labels.tolist() == [k % 10 for k in range(12)]


def test_pixels_are_exact_bytes_over_255(tmp_path: Path) -> None:
    folder = mnist_folder(tmp_path / "raw", gz=False)
    raw = np.frombuffer((folder / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    data = load_dataset(folder)
    expected = raw.reshape(12, 1, 28, 28).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(data.images.numpy(), expected)


def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "train-images-idx3-ubyte"  # gzipped content, no .gz suffix
    path.write_bytes(gzip.compress(idx_bytes(images, IMAGES_MAGIC)))
    np.testing.assert_array_equal(read_idx(path, IMAGES_MAGIC), images)


def test_single_file_finds_its_partner(mnist_dir: Path) -> None:
    from_images = load_dataset(mnist_dir / "train-images-idx3-ubyte.gz")
    from_labels = load_dataset(mnist_dir / "train-labels-idx1-ubyte.gz")
    assert len(from_images) == len(from_labels) == 12
    assert from_labels.ids[0] == "train-images-idx3-ubyte.gz#0"
    with pytest.raises(DataError, match="single IDX file"):
        load_dataset(mnist_dir / "t10k-images-idx3-ubyte.gz", part="test")


def test_fashion_names_from_kind_or_path(tmp_path: Path) -> None:
    folder = mnist_folder(tmp_path / "fashion-data")
    assert load_dataset(folder).class_names == FASHION_NAMES
    assert load_dataset(f"mnist:{folder}").class_names == tuple("0123456789")
    assert load_dataset(f"fashion-mnist:{folder}").name == "fashion-mnist"


def test_truncated_file(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8), IMAGES_MAGIC)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated IDX file"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(data[:10])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    path.write_bytes(gzip.compress(idx_bytes(images, IMAGES_MAGIC))[:600])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path, IMAGES_MAGIC)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8), LABELS_MAGIC) + b"\0\0")
    with pytest.raises(DataError, match="2 unexpected bytes"):
        read_idx(path, LABELS_MAGIC)


@pytest.mark.parametrize("magic", [LABELS_MAGIC, 0x0D03, 0x0803 + 0x01000000])
def test_wrong_magic_number(tmp_path: Path, magic: int) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(magic.to_bytes(4, "big") + bytes(12))
    with pytest.raises(DataError, match=r"wrong magic number .*starts with 2051"):
        read_idx(path, IMAGES_MAGIC)


def test_image_label_count_mismatch(mnist_dir: Path) -> None:
    write_idx(
        mnist_dir / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8), LABELS_MAGIC, gz=True
    )
    with pytest.raises(DataError, match=r"has 12 images but train-labels-idx1-ubyte.gz has 11"):
        load_dataset(mnist_dir)


def test_label_out_of_range(mnist_dir: Path) -> None:
    labels = np.array([0] * 11 + [10], np.uint8)
    write_idx(mnist_dir / "train-labels-idx1-ubyte.gz", labels, LABELS_MAGIC, gz=True)
    with pytest.raises(DataError, match=r"labels must lie in 0..9, found 0..10"):
        load_idx(mnist_dir)


def test_folder_without_test_files(mnist_dir: Path) -> None:
    (mnist_dir / "t10k-images-idx3-ubyte.gz").unlink()
    assert len(load_dataset(mnist_dir)) == 12
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[\.gz\] is missing"):
        load_dataset(mnist_dir, part="test")
    (mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no test files"):
        load_dataset(mnist_dir, part="test")


def test_lone_file_without_partner(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2)), IMAGES_MAGIC)
    with pytest.raises(DataError, match="matching file train-labels-idx1-ubyte is missing"):
        load_dataset(path)


@pytest.mark.parametrize(("removed", "kept"), [("labels", "images"), ("images", "labels")])
def test_folder_missing_one_file_of_the_pair_names_it(
    mnist_dir: Path, removed: str, kept: str
) -> None:
    """The folder is still recognised as IDX (it once was "unrecognised data folder")."""
    (mnist_dir / f"train-{removed}-idx{1 if removed == 'labels' else 3}-ubyte.gz").unlink()
    with pytest.raises(DataError, match=rf"train-{removed}-idx\d-ubyte\[\.gz\] is missing "
                       rf"\(found train-{kept}-idx\d-ubyte\.gz"):  # fmt: skip
        load_dataset(mnist_dir)


def test_header_sizes_cannot_overflow(tmp_path: Path) -> None:
    """2^21 · 2^21 · 2^22 = 2^64 wrapped to 0 in int64: a ValueError from reshape, not a DataError."""
    dims = (2**21, 2**21, 2**22)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims))
    with pytest.raises(DataError, match=rf"truncated IDX file.*\({2**64 + 16} bytes\)"):
        read_idx(path, IMAGES_MAGIC)


def test_images_without_pixels(tmp_path: Path) -> None:
    """A header declaring 0-pixel images once raised torch's RuntimeError (a traceback)."""
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 0, 4)), IMAGES_MAGIC)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1]), LABELS_MAGIC)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: the header declares 0×4-pixel"):
        load_dataset(tmp_path)
