"""ImageDataset validation, subset, concatenate, and the split helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.data import ImageDataset, concatenate, split_dataset, split_indices
from poisonlab.errors import DataError


def make(n: int = 6, num_classes: int = 3, name: str = "toy") -> ImageDataset:
    images = torch.linspace(0, 1, n * 4).reshape(n, 1, 2, 2)
    return ImageDataset(images, torch.arange(n) % num_classes, num_classes, name=name)


def test_defaults_for_names_and_ids() -> None:
    data = make()
    assert data.class_names == ("0", "1", "2")
    assert data.ids.tolist() == [f"toy#{k}" for k in range(6)]
    assert data.shape == (1, 2, 2) and data.class_counts() == [2, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.zeros(2, 2, 2)}, "4-d tensor"),
        ({"images": torch.zeros(2, 1, 2, 2, dtype=torch.float64)}, "float32"),
        ({"images": torch.full((2, 1, 2, 2), float("nan"))}, "NaN"),
        (
            {"images": torch.zeros(2, 1, 0, 2)},
            r"at least one channel and one pixel.*\(2, 1, 0, 2\)",
        ),
        ({"images": torch.zeros(2, 0, 2, 2)}, "at least one channel and one pixel"),
        ({"images": torch.full((2, 1, 2, 2), 1.5)}, r"\[0, 1\]"),
        # a float32 rounding overshoot, shown in full (":g" once printed it as "0..1")
        ({"images": torch.full((2, 1, 2, 2), 1.0000001)}, r"found 1\.00000011920928\d*\.\."),
        ({"labels": torch.tensor([0, 3])}, r"labels must lie in \[0, 2\]"),
        ({"labels": torch.tensor([-1, 0])}, "labels must lie"),
        ({"labels": torch.tensor([0])}, "2 images but 1 labels"),
        ({"class_names": ("a", "b")}, "2 class names for 3 classes"),
        ({"ids": np.array(["x"])}, "1 sample ids for 2 samples"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "images": torch.zeros(2, 1, 2, 2),
        "labels": torch.tensor([0, 1]),
        "num_classes": 3,
    }
    args.update(kwargs)
    with pytest.raises(DataError, match=message):
        ImageDataset(**args)  # type: ignore[arg-type]


def test_repr_is_one_short_line() -> None:
    """A notebook or a log shows the data set's name, size and shape, not every pixel and id."""
    data = ImageDataset(torch.zeros(5000, 1, 28, 28), torch.arange(5000) % 10, 10, name="fm")
    assert repr(data) == "ImageDataset('fm', 5000 images 1×28×28, 10 classes)"
    parts = repr(split_dataset(data, seed=0))
    assert "\n" not in parts and len(parts) < 250


def test_subset_keeps_ids_in_order() -> None:
    data = make()
    picked = data.subset([4, 1])
    assert picked.ids.tolist() == ["toy#4", "toy#1"]
    assert torch.equal(picked.images[0], data.images[4])
    assert data.subset(data.labels == 2).ids.tolist() == ["toy#2", "toy#5"]
    assert len(data.of_class(0)) == 2


def test_concatenate() -> None:
    both = concatenate([make(name="a"), make(4, name="b")], name="ab")
    assert len(both) == 10 and both.name == "ab"
    assert both.ids.tolist()[5:7] == ["a#5", "b#0"]
    other = ImageDataset(torch.zeros(1, 1, 3, 3), torch.tensor([0]), 3)
    with pytest.raises(DataError, match="cannot concatenate"):
        concatenate([make(), other])


def test_split_indices_deterministic_disjoint_stratified() -> None:
    labels = torch.arange(160) % 4
    parts = split_indices(labels, (0.5, 0.25, 0.25), seed=3)
    again = split_indices(labels, (0.5, 0.25, 0.25), seed=3)
    other = split_indices(labels, (0.5, 0.25, 0.25), seed=4)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not torch.equal(parts[0], other[0])
    joined = torch.cat(parts)
    assert len(joined) == 160 and len(torch.unique(joined)) == 160
    for part, size in zip(parts, (80, 40, 40), strict=True):
        assert len(part) == size
        assert torch.bincount(labels[part], minlength=4).tolist() == [size // 4] * 4


def test_split_dataset_parts() -> None:
    data = make(60)
    split = split_dataset(data, holdout=0.1, test=0.2, seed=0)
    sizes = (len(split.train), len(split.holdout), len(split.test))
    assert sizes == (42, 6, 12)
    ids = [set(part.ids.tolist()) for part in (split.train, split.holdout, split.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert split.test.class_counts() == [4, 4, 4]
    with pytest.raises(DataError, match="leave no training data"):
        split_dataset(data, holdout=0.5, test=0.5)
    with pytest.raises(DataError, match="sum to 1"):
        split_indices(data.labels, (0.5, 0.6), seed=0)
