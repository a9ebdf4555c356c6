"""CIFAR-10 in its python version: ``cifar-10-batches-py/`` with pickled batches, read safely.

Each batch (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) is a pickled dict with
``b"data"``, a uint8 array of shape (N, 3072) holding the red, green then blue 32×32 planes of
each image, and ``b"labels"``, N integers in 0..9. ``batches.meta`` holds ``b"label_names"``.
The batches are unpickled with :mod:`poisonlab.data.safe_pickle`, never with plain pickle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab.data.common import archive_message, check_labels, check_part, from_uint8, row_ids
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.safe_pickle import safe_load
from poisonlab.errors import DataError

FOLDER = "cifar-10-batches-py"
NUM_CLASSES = 10
PIXELS = 3 * 32 * 32
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")


def cifar_root(path: Path) -> Path | None:
    """The batch folder at ``path`` or at ``path/cifar-10-batches-py``, or None when absent."""
    for folder in (path, path / FOLDER):
        if folder.is_dir() and (
            (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file()
        ):
            return folder
    return None


def enclosing_root(path: Path) -> Path | None:
    """The batch folder holding ``path`` when ``path`` is one of its files (``data_batch_1``,
    ``test_batch``, ``batches.meta``), else None; the folder is what to pass."""
    named = path.name in ("test_batch", "batches.meta") or _TRAIN_BATCH.fullmatch(path.name)
    return path.parent if path.is_file() and named and cifar_root(path.parent) else None


def _field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """``batch[b"key"]`` (as Python 2 wrote it) or ``batch["key"]``; a DataError names a miss."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    found = ", ".join(sorted(repr(k) for k in batch)) or "none"
    raise DataError(f"{path}: missing key b{key!r} (found keys: {found})")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file, validated."""
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = _field(batch, "data", path), _field(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array, got {kind}")
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataError(f"{path}: b'data' must have shape (N, {PIXELS}), got {data.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: b'labels' must be a list of integers")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    check_labels(labels, NUM_CLASSES, str(path))
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_class_names(root: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta``, or the published CIFAR-10 names when it is absent."""
    meta_path = root / "batches.meta"
    if not meta_path.exists():
        return CLASS_NAMES
    meta = safe_load(meta_path)
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a pickled dict, got {type(meta).__name__}")
    names = _field(meta, "label_names", meta_path)
    if not isinstance(names, list | tuple) or len(names) != NUM_CLASSES:
        raise DataError(f"{meta_path}: b'label_names' must list {NUM_CLASSES} names")
    try:
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError:
        raise DataError(f"{meta_path}: b'label_names' are not valid UTF-8") from None


def batch_files(root: Path, part: str) -> list[Path]:
    """``test_batch``, or ``data_batch_1`` .. ``data_batch_k`` with no gap in the numbering."""
    if part == "test":
        if not (root / "test_batch").is_file():
            raise DataError(f"{root}: test_batch is missing")
        return [root / "test_batch"]
    numbers = sorted(
        int(m.group(1)) for p in root.iterdir() if (m := _TRAIN_BATCH.fullmatch(p.name))
    )
    if not numbers:
        raise DataError(f"{root}: no training batches (data_batch_1 .. data_batch_5)")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        raise DataError(f"{root}: data_batch_{missing[0]} is missing")
    return [root / f"data_batch_{k}" for k in numbers]


def load_cifar10(path: Path, part: str = "train") -> ImageDataset:
    """Load the train batches (all ``data_batch_*``) or ``test_batch`` of a CIFAR-10 folder."""
    root = cifar_root(path)
    if root is None and (folder := enclosing_root(path)) is not None:
        raise DataError(
            f"{path} is one file of the CIFAR-10 folder {folder}: pass the folder (the training "
            "part is every data_batch_*, the test part test_batch with part='test', --part test)"
        )
    if root is None and (archive := archive_message(path)) is not None:
        raise DataError(archive)
    if root is None:
        raise DataError(f"{path}: not a CIFAR-10 python folder (no data_batch_1 or test_batch)")
    check_part(part, str(root), has_test=True)
    class_names = read_class_names(root)
    pixels, labels, ids = [], [], []
    for file in batch_files(root, part):
        batch_pixels, batch_labels = read_batch(file)
        pixels.append(batch_pixels)
        labels.append(batch_labels)
        ids.append(row_ids(f"{root.name}/{file.name}", len(batch_labels)))
    return from_uint8(
        np.concatenate(pixels),
        np.concatenate(labels),
        num_classes=NUM_CLASSES,
        class_names=class_names,
        name="cifar10",
        ids=np.concatenate(ids),
    )
