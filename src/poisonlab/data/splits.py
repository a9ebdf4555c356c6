"""Deterministic, stratified train / held-out / test splits from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import torch

from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.errors import DataError
from poisonlab.seeding import make_generator
from poisonlab.validation import SEED, Interval, check_param


@dataclass(frozen=True)
class Split:
    """Three disjoint parts of one dataset."""

    train: ImageDataset
    holdout: ImageDataset
    test: ImageDataset


def split_indices(
    labels: torch.Tensor, fractions: tuple[float, ...], seed: int
) -> list[torch.Tensor]:
    """Stratified split of ``range(len(labels))`` into parts of the given fractions (summing to 1).

    Each class is shuffled with a generator seeded by ``seed`` and cut in the same proportions,
    so every part keeps the class balance; the result does not depend on anything but the seed.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    generator = make_generator(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        bounds = torch.tensor([0.0, *fractions]).cumsum(0) * len(members)
        cuts = bounds.round().long().tolist()
        for k in range(len(fractions)):
            parts[k].append(members[cuts[k] : cuts[k + 1]])
    return [
        torch.sort(torch.cat(p)).values if p else torch.empty(0, dtype=torch.long) for p in parts
    ]


_PART = Interval(Real, 0, 1, closed="left")


def split_dataset(
    dataset: ImageDataset,
    *,
    holdout: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split into train / held-out (clean, for defenses that need it) / test parts."""
    check_param("split_dataset", "dataset", dataset, [DATASET])
    check_param("split_dataset", "holdout", holdout, [_PART])
    check_param("split_dataset", "test", test, [_PART])
    check_param("split_dataset", "seed", seed, [SEED])
    train_fraction = 1.0 - holdout - test
    if train_fraction <= 0:
        raise DataError(f"holdout ({holdout}) + test ({test}) leave no training data")
    train_idx, holdout_idx, test_idx = split_indices(
        dataset.labels, (train_fraction, holdout, test), seed
    )
    return Split(dataset.subset(train_idx), dataset.subset(holdout_idx), dataset.subset(test_idx))
