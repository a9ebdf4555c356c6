"""Builders of tiny data files in the real published formats, written into tmp_path."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file's bytes: magic, big-endian dimensions, then the uint8 values."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = False) -> Path:
    """Write ``array`` as an IDX file at ``path``, gzipped when ``gz``."""
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def mnist_folder(root: Path, *, n_train: int = 12, n_test: int = 5, gz: bool = True) -> Path:
    """A folder with the four standard MNIST files holding random 28×28 images."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, IMAGES_MAGIC, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, LABELS_MAGIC, gz=gz)
    return root


def cifar_batch(n: int, seed: int = 0) -> dict[bytes, object]:
    """One CIFAR-10 batch dict as the python version stores it (bytes keys)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in np.arange(n) % 10],
        b"filenames": [f"img_{k}.png".encode() for k in range(n)],
    }


def write_pickle(path: Path, obj: object, protocol: int = 2) -> Path:
    """Pickle ``obj`` to ``path`` (protocol 2, like the published CIFAR files)."""
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def cifar_folder(root: Path, *, n: int = 4, batches: int = 5) -> Path:
    """A ``cifar-10-batches-py`` folder with ``batches`` train batches, a test batch and meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, batches + 1):
        write_pickle(folder / f"data_batch_{k}", cifar_batch(n, seed=k))
    write_pickle(folder / "test_batch", cifar_batch(n, seed=99))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n})
    return folder


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", value: int = 128) -> Path:
    """A solid image of (width, height) ``size`` saved in the format its suffix names."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, fill).save(path)
    return path


GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def gtsrb_root(root: Path, *, classes: tuple[int, ...] = (0, 2), per_class: int = 2) -> Path:
    """A GTSRB root with training class folders and a labelled test folder, 40×36 ppm images."""
    train = root / "Final_Training" / "Images"
    for label in classes:
        folder = train / f"{label:05d}"
        lines = [GT_HEADER]
        for k in range(per_class):
            name = f"00000_{k:05d}.ppm"
            write_image(folder / name, (40, 36), value=20 * label + k)
            lines.append(f"{name};40;36;5;5;34;30;{label}\n")
        (folder / f"GT-{label:05d}.csv").write_text("".join(lines))
    test = root / "Final_Test" / "Images"
    lines = [GT_HEADER]
    for k, label in enumerate(classes):
        write_image(test / f"{k:05d}.ppm", (40, 36), value=7 * k)
        lines.append(f"{k:05d}.ppm;40;36;5;5;34;30;{label}\n")
    (test / "GT-final_test.csv").write_text("".join(lines))
    return root


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """The four gzipped MNIST files (12 train, 5 test images) in tmp_path/mnist."""
    return mnist_folder(tmp_path / "mnist")
