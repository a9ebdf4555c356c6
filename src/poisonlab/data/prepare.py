"""From a data spec to train / held-out / test parts, the same way in every command."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any

from poisonlab.data.checks import check_training_data, data_errors
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.splits import Split, split_dataset, split_indices
from poisonlab.errors import DataError
from poisonlab.validation import Interval, check_param


def prepare_splits(
    spec: str | Path,
    *,
    holdout: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> Split:
    """Load ``spec`` and return deterministic train / held-out / test parts.

    Sources with an official test part (IDX folders, CIFAR-10, GTSRB) keep it as the test part
    and carve the held-out part (a ``holdout`` fraction, stratified) from their training part.
    Single-part sources (digits, npz, image folders) are split ``1-holdout-test / holdout / test``.
    ``limit`` keeps a stratified random subset of about that many training images (and
    proportionally fewer held-out and test images), for quick runs on large data: each class keeps
    its share, rounded, so ``limit=9`` over 10 classes keeps 10. ``size`` (an int for a square, or
    (height, width)) resizes the images of an image folder or GTSRB, as ``load_dataset``'s.

    Everything here precedes training, so the data is checked here (:mod:`poisonlab.data.checks`):
    no images or a single class raise a DataError; classes with few or no training images are logged
    as warnings.
    """
    from poisonlab.data.loaders import has_test_part, load_dataset

    check_param("prepare_splits", "limit", limit, [None, Interval(Integral, 1, None)])
    options: dict[str, Any] = {} if size is None else {"size": size}
    if has_test_part(spec):
        train_all = load_dataset(spec, part="train", **options)
        raise_for(data_errors(train_all))
        test_part = load_dataset(spec, part="test", **options)
        train_idx, holdout_idx = split_indices(train_all.labels, (1.0 - holdout, holdout), seed)
        split = Split(train_all.subset(train_idx), train_all.subset(holdout_idx), test_part)
    else:
        everything = load_dataset(spec, **options)
        raise_for(data_errors(everything))
        split = split_dataset(everything, holdout=holdout, test=test, seed=seed)
    what = f"the training part of {split.train.name!r}"
    if limit is not None and len(split.train) > limit:
        # each class keeps its share, rounded: a limit near the number of classes can keep none
        what += f" cut to limit={limit} of its {len(split.train)} images (per class, rounded)"
        split = _limit(split, limit, seed)
    check_training_data(split.train, what=what)
    return split


def raise_for(errors: list[str]) -> None:
    """A DataError with the first of ``errors``, if any."""
    if errors:
        raise DataError(errors[0])


def _stratified_head(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    if len(data) <= n:
        return data
    keep, _ = split_indices(data.labels, (n / len(data), 1 - n / len(data)), seed)
    return data.subset(keep)


def _limit(split: Split, limit: int, seed: int) -> Split:
    ratio = limit / len(split.train)
    return Split(
        _stratified_head(split.train, limit, seed),
        _stratified_head(split.holdout, max(1, round(len(split.holdout) * ratio)), seed + 1),
        _stratified_head(split.test, max(1, round(len(split.test) * ratio)), seed + 2),
    )
