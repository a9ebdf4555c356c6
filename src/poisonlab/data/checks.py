"""Checks on a data set before anything is trained on it: errors for the impossible, warnings for
the doubtful.

Loaders check that every value is well formed (shapes, pixel ranges, label ranges). What they
cannot know is whether the data set as a whole can train a classifier, so these checks run where
training is about to start (:func:`poisonlab.data.prepare.prepare_splits`, used by ``train``,
``attack`` and the experiment tasks, and :func:`poisonlab.workflows.scan.scan`) and in
``data info``:

- **errors** (:class:`~poisonlab.errors.DataError`): no images at all, or images of a single
  class: a classifier cannot be trained (a model error would follow, far from the cause);
- **warnings** (logged on ``poisonlab.data``, returned as text): classes with fewer than
  :data:`MIN_PER_CLASS` images (too few to train on, or to split into held-out and test parts),
  and declared classes without any image (the model still has an output for them; per-class
  defenses skip them).

:func:`check_label_range` is the loaders' guard against labels that are not class indices: a
label set whose maximum is far above the number of distinct labels (one label of 10⁹ among 300
images) would otherwise make a loader that infers the classes from the labels allocate a class
name per index, up to the maximum.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError
from poisonlab.ranges import counted

log = logging.getLogger("poisonlab.data")

MIN_PER_CLASS = 10
"""Fewer images than this in a class draw a warning."""
SPARSE_FACTOR = 2
SPARSE_SLACK = 10
"""Labels inferred as 0..max are refused when max + 1 > SPARSE_FACTOR · distinct + SPARSE_SLACK:
up to about half the indices may be unused (a subset of a labelled collection), not more."""
_MAX_LISTED = 6


def check_label_range(labels: np.ndarray, where: str) -> int:
    """The number of classes implied by integer ``labels`` (max + 1), checked to be reasonable.

    Labels are class indices 0..K-1. When no class names declare K, it is inferred as max + 1, and
    that is only trusted while the labels use a fair share of it (see :data:`SPARSE_FACTOR`).

    Raises
    ------
    DataError
        Naming the largest label, the number of distinct labels and how to declare sparse classes.
    """
    if labels.size == 0:
        return 1
    highest = int(labels.max())
    distinct = len(np.unique(labels))
    if highest + 1 > SPARSE_FACTOR * distinct + SPARSE_SLACK:
        raise DataError(
            f"{where}: the largest label is {highest} but there are only {distinct} distinct "
            f"labels among {labels.size} samples; labels are class indices 0..K-1. Renumber the "
            "classes consecutively, or declare the classes with a class_names array (one name "
            "per class; save_npz writes it) when most of them really have no samples"
        )
    return highest + 1


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def data_warnings(data: ImageDataset, *, what: str | None = None) -> list[str]:
    """The doubtful things about ``data`` as one line each (nothing is logged or raised)."""
    where = what or f"data set {data.name!r}"
    counts = data.class_counts()
    names = data.class_names
    found: list[str] = []
    empty = [f"{c} ({names[c]!r})" for c, n in enumerate(counts) if n == 0]
    few = [f"{c} ({n})" for c, n in enumerate(counts) if 0 < n < MIN_PER_CLASS]
    if few and len(data):
        found.append(
            f"{where}: {counted(len(few), 'class')} with fewer than {MIN_PER_CLASS} images, class "
            f"(count): {_listed(few)}; too few to learn a class or to split off held-out and "
            "test images reliably"
        )
    if empty and len(data):
        have, them = ("has", "it") if len(empty) == 1 else ("have", "them")
        found.append(
            f"{where}: {len(empty)} of {len(counts)} declared classes {have} no images: "
            f"{_listed(empty)}; the model still predicts {them}, per-class defenses skip {them}"
        )
    return found


def data_errors(data: ImageDataset, *, what: str | None = None) -> list[str]:
    """What makes ``data`` impossible to train a classifier on (empty, or a single class)."""
    where = what or f"data set {data.name!r}"
    if len(data) == 0:
        return [f"{where} has no images; a classifier needs images of at least two classes"]
    present = [c for c, n in enumerate(data.class_counts()) if n]
    if len(present) < 2:
        c = present[0]
        return [
            f"{where} has images of one class only (class {c}, {data.class_names[c]!r}, "
            f"{len(data)} images); a classifier needs at least two classes"
        ]
    return []


def check_training_data(data: ImageDataset, *, what: str | None = None) -> list[str]:
    """Raise for data no classifier can be trained on; log and return the warnings otherwise.

    Parameters
    ----------
    data : ImageDataset
    what : str or None
        How messages name the data (default ``data set '<name>'``).

    Raises
    ------
    DataError
        No images, or images of a single class.
    """
    errors = data_errors(data, what=what)
    if errors:
        raise DataError(errors[0])
    found = data_warnings(data, what=what)
    for message in found:
        log.warning(message)
    return found
