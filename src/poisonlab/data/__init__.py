"""Data: the ImageDataset type, validated loaders for every supported format, and splits.

``load_dataset("digits")`` gives the embedded default; ``load_dataset(path)`` detects the format
of an .npz, MNIST-style IDX files, CIFAR-10 batches, GTSRB or a folder of class subfolders.
``prepare_splits(spec, limit=...)`` gives train / held-out / test parts as every command makes
them (a source's official test part kept as the test part; ``limit`` a stratified subset).
Importing this package stays light: scikit-learn and Pillow are imported only when used.
"""

from __future__ import annotations

from poisonlab.data.dataset import ImageDataset, concatenate, save_npz
from poisonlab.data.loaders import (
    DATA_SOURCES,
    DataSource,
    detect_source,
    has_test_part,
    image_shape,
    load_dataset,
    source_help,
)
from poisonlab.data.prepare import prepare_splits
from poisonlab.data.splits import Split, split_dataset, split_indices

__all__ = [
    "DATA_SOURCES",
    "DataSource",
    "ImageDataset",
    "Split",
    "concatenate",
    "detect_source",
    "has_test_part",
    "image_shape",
    "load_dataset",
    "prepare_splits",
    "save_npz",
    "source_help",
    "split_dataset",
    "split_indices",
]
