"""The one in-memory dataset type: float32 N×C×H×W images in [0, 1] with int64 labels and source ids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poisonlab.errors import DataError
from poisonlab.validation import InstanceOf, check_param

MAX_UNNAMED_CLASSES = 100_000
"""Most classes a data set may have without ``class_names`` (default names are made per class)."""


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """Channels-first images in [0, 1] with integer class labels and a per-sample source id.

    Parameters
    ----------
    images : Tensor of shape (N, C, H, W), float32, values in [0, 1]
    labels : Tensor of shape (N,), int64, values in [0, num_classes)
    num_classes : int
    class_names : tuple of str, one per class
    name : str
        Where the data came from (``digits``, a file name...), shown in reports.
    ids : ndarray of str, shape (N,)
        Stable id tracing each sample back to its source file and row or path, e.g.
        ``train-images-idx3-ubyte.gz#41``, so flagged samples can be found in the user's data.
    """

    images: Tensor
    labels: Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()
    name: str = "dataset"
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        where = f"dataset {self.name!r}"
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise DataError(f"{where}: images must be a 4-d tensor (N, C, H, W), got {shape}")
        if 0 in images.shape[1:]:  # torch.aminmax below has no answer for 0-pixel images
            raise DataError(
                f"{where}: images must have at least one channel and one pixel, got shape "
                f"{tuple(images.shape)} (N, C, H, W)"
            )
        if images.dtype != torch.float32:
            raise DataError(f"{where}: images must be float32, got {images.dtype}")
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
            raise DataError(f"{where}: labels must be a 1-d int64 tensor")
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, Integral):
            raise DataError(f"{where}: num_classes must be an integer, got {self.num_classes!r}")
        if self.num_classes < 1:
            raise DataError(f"{where}: num_classes must be >= 1, got {self.num_classes}")
        if not self.class_names and self.num_classes > MAX_UNNAMED_CLASSES:
            # default names are made per class: never from an unchecked number
            raise DataError(
                f"{where}: {self.num_classes} classes without class_names; more than "
                f"{MAX_UNNAMED_CLASSES} classes must be declared by name"
            )
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise DataError(
                f"{where}: labels must lie in [0, {self.num_classes - 1}], "
                f"found {int(labels.min())}..{int(labels.max())}"
            )
        if len(images):
            lo_t, hi_t = torch.aminmax(images)  # one pass; NaN propagates into the extremes
            lo, hi = float(lo_t), float(hi_t)
            if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
                raise DataError(f"{where}: images contain NaN or infinite pixels")
            if lo < 0.0 or hi > 1.0:
                # repr, not :g, so an overshoot by rounding (1.0000001) is not shown as 1
                raise DataError(f"{where}: pixels must lie in [0, 1], found {lo!r}..{hi!r}")
        names = tuple(map(str, self.class_names)) or tuple(map(str, range(self.num_classes)))
        if len(names) != self.num_classes:
            raise DataError(f"{where}: {len(names)} class names for {self.num_classes} classes")
        object.__setattr__(self, "class_names", names)
        ids = np.asarray(self.ids, dtype=str)
        if ids.size == 0 and len(labels):
            ids = np.array([f"{self.name}#{i}" for i in range(len(labels))])
        if ids.shape != (len(labels),):
            raise DataError(f"{where}: {ids.size} sample ids for {len(labels)} samples")
        object.__setattr__(self, "ids", ids)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        """Its name, size, image shape and classes, e.g. ``ImageDataset('digits', 1797 images
        1×8×8, 10 classes)``: what a notebook or a log shows, not every pixel and id."""
        c, h, w = self.shape
        return (
            f"ImageDataset({self.name!r}, {len(self)} images {c}×{h}×{w}, "
            f"{self.num_classes} classes)"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> list[int]:
        """Number of samples per class, indexed by class."""
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index: Tensor | Sequence[int] | np.ndarray) -> ImageDataset:
        """The samples at ``index`` (integer indices or a boolean mask), in that order."""
        index = torch.as_tensor(np.asarray(index))
        if index.dtype == torch.bool:
            if index.shape != self.labels.shape:
                raise DataError(f"mask of shape {tuple(index.shape)} for {len(self)} samples")
            index = index.nonzero().flatten()
        index = index.long()
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            num_classes=self.num_classes,
            class_names=self.class_names,
            name=self.name,
            ids=self.ids[index.numpy()],
        )

    def with_labels(self, labels: Tensor) -> ImageDataset:
        """The same images with other labels (relabelling, e.g. for dirty-label attacks)."""
        return ImageDataset(
            self.images, labels.long(), self.num_classes, self.class_names, self.name, self.ids
        )

    def with_images(self, images: Tensor) -> ImageDataset:
        """The same labels and ids with other images (e.g. after adding a trigger)."""
        return ImageDataset(
            images.float(), self.labels, self.num_classes, self.class_names, self.name, self.ids
        )

    def renamed(self, name: str) -> ImageDataset:
        """The same data under another name."""
        return ImageDataset(
            self.images, self.labels, self.num_classes, self.class_names, name, self.ids
        )

    def of_class(self, label: int) -> ImageDataset:
        """All samples labelled ``label``."""
        return self.subset(self.labels == label)


def concatenate(parts: Sequence[ImageDataset], name: str | None = None) -> ImageDataset:
    """Join datasets with the same image shape and classes, keeping their ids."""
    if not parts:
        raise DataError("concatenate needs at least one dataset")
    first = parts[0]
    for part in parts[1:]:
        if part.shape != first.shape or part.num_classes != first.num_classes:
            raise DataError(
                f"cannot concatenate {part.name!r} {part.shape}/{part.num_classes} classes "
                f"with {first.name!r} {first.shape}/{first.num_classes} classes"
            )
    return ImageDataset(
        images=torch.cat([p.images for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        num_classes=first.num_classes,
        class_names=first.class_names,
        name=name or first.name,
        ids=np.concatenate([p.ids for p in parts]),
    )


def save_npz(dataset: ImageDataset, path: str | Path, **extra: np.ndarray) -> Path:
    """Write ``dataset`` to ``path`` as .npz (x uint8 N×H×W×C, y, ids, class_names, plus ``extra``).

    Pixels are stored as uint8 when every value is an exact multiple of 1/255 (lossless), and as
    float32 otherwise (e.g. crafted poisons), so a round trip never changes a pixel. The file is
    written beside ``path`` and renamed into place, so a failed write leaves nothing behind.
    """
    check_param("save_npz", "dataset", dataset, [DATASET])
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{path}: a folder; name the .npz file to write in it (e.g. {path / 'data.npz'})"
        )
    arrays: dict[str, Any] = {
        "x": npz_pixels(dataset.images),
        "y": dataset.labels.numpy(),
        "ids": dataset.ids.astype(str),
        "class_names": np.array(dataset.class_names, dtype=str),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def npz_pixels(images: Tensor) -> np.ndarray:
    """N×C×H×W images as .npz files store them: N×H×W×C uint8 when that is lossless, else float32."""
    x = images.permute(0, 2, 3, 1).numpy()
    as_bytes = np.round(x * 255.0)
    if np.array_equal((as_bytes / 255.0).astype(np.float32), x):
        return as_bytes.astype(np.uint8)
    return x


DATASET = InstanceOf(
    ImageDataset, "an ImageDataset (load_dataset(...), a PoisonedDataset's .dataset)"
)
"""The constraint of an argument that takes a data set (:func:`poisonlab.validation.check_param`)."""
