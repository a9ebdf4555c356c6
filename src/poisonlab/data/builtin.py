"""Data sets available without a path: scikit-learn's digits and the Debian Fashion-MNIST package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poisonlab.data.common import check_part, row_ids
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.idx import find_idx_pair, load_idx
from poisonlab.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_digits(part: str = "train") -> ImageDataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, one part), pixels 0..16 / 16."""
    check_part(part, "digits", has_test=False)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None] / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels),
        num_classes=10,
        class_names=tuple(str(k) for k in range(10)),
        name="digits",
        ids=row_ids("digits.csv.gz", len(labels)),
    )


def fashion_mnist_dir() -> Path:
    """Where the ``dataset-fashion-mnist`` package put the files; a DataError says how to get it."""
    if find_idx_pair(FASHION_MNIST_DIR, "train") is None:
        raise DataError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: install it with "
            "`apt-get install dataset-fashion-mnist`, or pass the folder holding its four "
            "*-ubyte.gz files (fashion-mnist:PATH)"
        )
    return FASHION_MNIST_DIR


def load_fashion_mnist(path: Path | None = None, part: str = "train") -> ImageDataset:
    """Fashion-MNIST from ``path`` or, without one, from the Debian package's folder."""
    return load_idx(path or fashion_mnist_dir(), part, kind="fashion-mnist")
