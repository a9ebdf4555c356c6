"""PoisonedDataset.load reads back what PoisonedDataset.save (and ``poisonlab attack``) wrote, and
refuses a file that is not a poisoned set with one line naming the file and the array."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonlab.attacks import PoisonedDataset, build_attack
from poisonlab.data import save_npz
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import ModelConfig, build_model
from poisonlab.workflows.collision_eval import evaluate_transfer
from poisonlab.workflows.filtering import attack_success
from tests.conftest import blobs_dataset


def poisoned_set(**params: object) -> PoisonedDataset:
    return build_attack("badnets", count=6, **params).poison(
        blobs_dataset(n_per_class=20, seed=0), generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(
    "params",
    [
        {},  # appended poisons
        {"mode": "replace", "trigger": "sticker", "window": (4, 6), "color": (200, 100, 0)},
    ],
)
def test_save_then_load_gives_the_same_set(tmp_path: Path, params: dict) -> None:
    poisoned = poisoned_set(**params)
    loaded = PoisonedDataset.load(poisoned.save(tmp_path / "poisoned.npz"))
    data, back = poisoned.dataset, loaded.dataset
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    assert list(back.ids) == list(data.ids) and back.class_names == data.class_names
    assert back.num_classes == data.num_classes
    for name in ("is_poison", "original_labels", "source_index"):
        assert torch.equal(getattr(loaded, name), getattr(poisoned, name)), name
        assert getattr(loaded, name).dtype == getattr(poisoned, name).dtype, name
    assert list(loaded.source_ids) == list(poisoned.source_ids)
    assert loaded.attack == "badnets" and loaded.n_poison == poisoned.n_poison == 6
    # params as the attack gives them (a window and a colour are tuples, not JSON's lists)
    assert loaded.params == poisoned.params
    assert build_attack(loaded.attack, **loaded.params).params() == poisoned.params
    assert loaded.test_set is None and loaded.targets is None and loaded.extras == {}


def same_data(a: ImageDataset | None, b: ImageDataset | None) -> bool:
    assert a is not None and b is not None
    return (
        torch.equal(a.images, b.images)
        and torch.equal(a.labels, b.labels)
        and list(a.ids) == list(b.ids)
        and a.class_names == b.class_names
    )


def untrained(data: ImageDataset) -> torch.nn.Module:
    c, h, w = data.shape
    return build_model(ModelConfig("cnn-small", c, h, w, data.num_classes), seed=0)


@pytest.mark.parametrize("as_bytes", [False, True])  # float32 pixels, or saved as uint8
def test_the_triggered_test_set_comes_back_and_measures_the_same_asr(
    tmp_path: Path, as_bytes: bool
) -> None:
    data, test = blobs_dataset(n_per_class=20, seed=0), blobs_dataset(n_per_class=8, seed=1)
    if as_bytes:
        data, test = ((d.with_images((d.images * 255).round() / 255)) for d in (data, test))
    poisoned = build_attack("badnets", count=6).poison(
        data, test=test, generator=torch.Generator().manual_seed(0)
    )
    loaded = PoisonedDataset.load(poisoned.save(tmp_path / "poisoned.npz"))
    assert same_data(loaded.test_set, poisoned.test_set)
    assert loaded.targets is None and loaded.target_labels is None
    model = untrained(data)
    assert attack_success(model, loaded) == attack_success(model, poisoned)


def test_a_test_set_named_otherwise_is_saved_under_the_datas_class_names(tmp_path: Path) -> None:
    """A test .npz without class_names ('0', '1', '2') beside named training data: poison()
    took it, and save() then refused the whole poisoned set."""
    named = dataclasses.replace(blobs_dataset(n_per_class=20), class_names=("cat", "dog", "eel"))
    poisoned = build_attack("badnets", count=6).poison(
        named, test=blobs_dataset(n_per_class=8, seed=1), generator=torch.Generator().manual_seed(0)
    )
    loaded = PoisonedDataset.load(poisoned.save(tmp_path / "poisoned.npz"))
    assert loaded.test_set is not None and poisoned.test_set is not None
    assert loaded.test_set.class_names == ("cat", "dog", "eel")
    assert torch.equal(loaded.test_set.labels, poisoned.test_set.labels)
    model = untrained(named)
    assert attack_success(model, loaded) == attack_success(model, poisoned)


def test_a_set_whose_file_could_not_be_read_back_is_not_written(tmp_path: Path) -> None:
    """A 12×12 test set beside 8×8 data was saved, and load() refused the file it wrote."""
    poisoned = build_attack("badnets", count=6).poison(
        blobs_dataset(n_per_class=20),
        test=blobs_dataset(n_per_class=8, seed=1, size=12),
        generator=torch.Generator().manual_seed(0),
    )
    path = tmp_path / "poisoned.npz"
    with pytest.raises(DataError, match=r"^PoisonedDataset.save: .*'test_x' holds images of shape"):
        poisoned.save(path)
    assert list(tmp_path.iterdir()) == []


def collision_set() -> PoisonedDataset:
    """A feature-collision result by hand: 2 targets, 2 poisons aimed at each."""
    data = blobs_dataset(n_per_class=10, seed=0)
    n = len(data)
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[[1, 11, 12, 21]] = True
    return PoisonedDataset(
        dataset=data,
        is_poison=is_poison,
        original_labels=data.labels.clone(),
        source_index=torch.arange(n),
        source_ids=data.ids.copy(),
        attack="feature-collision",
        params={"num_targets": 2},
        targets=blobs_dataset(n_per_class=1, seed=2).subset([0, 2]),
        target_labels=torch.tensor([1, 0]),
        extras={"poison_target": [0, 1, 1, 0], "perturbation_l2": [0.1] * 4},
    )


def test_the_targets_and_which_poison_aims_at_which_come_back(tmp_path: Path) -> None:
    poisoned = collision_set()
    loaded = PoisonedDataset.load(poisoned.save(tmp_path / "poisoned.npz"))
    assert same_data(loaded.targets, poisoned.targets) and loaded.test_set is None
    assert loaded.target_labels is not None and poisoned.target_labels is not None
    assert torch.equal(loaded.target_labels, poisoned.target_labels)
    assert loaded.extras == {"poison_target": [0, 1, 1, 0]}  # the rest is in attack.json
    model = untrained(poisoned.dataset)
    assert attack_success(model, loaded) == attack_success(model, poisoned)


def test_several_targets_without_poison_target_are_refused() -> None:
    unknown = dataclasses.replace(collision_set(), extras={})
    with pytest.raises(ConfigError, match="2 targets and no poison_target"):
        evaluate_transfer(untrained(unknown.dataset), unknown)


def test_an_older_file_loads_without_them_and_says_so_when_measured(tmp_path: Path) -> None:
    data, test = blobs_dataset(n_per_class=20, seed=0), blobs_dataset(n_per_class=8, seed=1)
    poisoned = build_attack("badnets", count=6).poison(
        data, test=test, generator=torch.Generator().manual_seed(0)
    )
    path = tmp_path / "older.npz"
    with np.load(poisoned.save(tmp_path / "poisoned.npz")) as archive:
        np.savez(path, **{k: archive[k] for k in archive.files if not k.startswith("test_")})
    loaded = PoisonedDataset.load(path)
    assert loaded.test_set is None and torch.equal(loaded.is_poison, poisoned.is_poison)
    with pytest.raises(DataError, match="written before poisonlab saved them"):
        attack_success(untrained(data), loaded)


def test_a_file_without_attack_and_params_loads_as_unknown(tmp_path: Path) -> None:
    poisoned = poisoned_set()
    path = tmp_path / "older.npz"
    with np.load(poisoned.save(tmp_path / "poisoned.npz")) as archive:
        np.savez(path, **{k: archive[k] for k in archive.files if k not in ("attack", "params")})
    loaded = PoisonedDataset.load(path)
    assert (loaded.attack, loaded.params) == ("unknown", {})
    assert torch.equal(loaded.is_poison, poisoned.is_poison)


def rewritten(tmp_path: Path, saved: PoisonedDataset | None = None, **changes: object) -> Path:
    """``saved`` (a BadNets set by default) as poisoned.npz, with arrays replaced (a value) or
    removed (None)."""
    with np.load((saved or poisoned_set()).save(tmp_path / "poisoned.npz")) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"original_label": None}, r"no 'original_label' array"),
        ({"is_poison": None, "source_id": None}, r"no 'is_poison', 'source_id' array"),
        ({"source_index": np.arange(5)}, r"'source_index' must be 66 integer row indices"),
        (
            {"original_label": np.full(66, 7)},
            r"'original_label' must be 66 integer labels in \[0, 2\], one per image; got 7 at "
            r"row 0 \(66 such rows\)",
        ),
        (
            {"source_index": np.arange(66) - 3},
            r"'source_index' must be 66 integer row indices >= 0, one per image; got -3 at row 0 "
            r"\(3 such rows\)",
        ),
        (
            {"source_index": np.arange(66) - 1},
            r"got -1 at row 0 \(1 such row\)",
        ),
        ({"source_id": np.arange(66)}, r"'source_id' must be 66 strings"),
        ({"is_poison": np.ones(3, bool)}, r"'is_poison'.* must be 66 booleans"),
        (
            {"source_id": np.array(list("ab") * 33, dtype=object)},
            "'source_id' cannot be read without pickle",
        ),
        ({"params": np.array("[1, 2]")}, "'params' must be a JSON object"),
        ({"attack": np.array(["a", "b"])}, "'attack' must be one string"),
    ],
)
def test_a_file_that_is_not_a_poisoned_set_is_refused_naming_the_array(
    tmp_path: Path, changes: dict, message: str
) -> None:
    path = rewritten(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as caught:
        PoisonedDataset.load(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_labels": None}, "'target_x' without 'target_labels'"),
        ({"target_ids": None}, "'target_x' without 'target_ids'"),
        ({"target_x": None}, r"'target_labels' without the targets \('target_x'\)"),
        (
            {"target_x": None, "target_labels": None},
            r"'poison_target' without the targets \('target_x'\)$",
        ),
        (
            {"target_labels": np.array([1, 5])},
            r"'target_labels' must be 2 integer labels in \[0, 2\], one per target; got 5 at row 1",
        ),
        (
            {"poison_target": np.array([0, 1, 2, 0])},
            r"'poison_target' must be 4 integer indices in \[0, 1\] of the targets, one per "
            r"poison; got 2 at row 2",
        ),
        ({"poison_target": np.zeros(3, int)}, r"'poison_target' must be 4 integer"),
        ({"target_y": np.array([0, 3])}, r"label 3 in 'target_y' but only 3 classes"),
        ({"target_y": np.array([0])}, r"2 images in 'target_x' but 1 labels in 'target_y'"),
        (
            {"target_x": np.zeros((2, 4, 4, 1), np.uint8)},
            r"'target_x' holds images of shape \(1, 4, 4\) \(C, H, W\); 'x' holds \(1, 8, 8\)",
        ),
        ({"target_x": np.full((2, 8, 8), 2.0)}, r"'target_x': float pixels must lie in \[0, 1\]"),
    ],
)
def test_malformed_targets_are_refused_naming_the_array(
    tmp_path: Path, changes: dict, message: str
) -> None:
    path = rewritten(tmp_path, collision_set(), **changes)
    with pytest.raises(DataError, match=message) as caught:
        PoisonedDataset.load(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_plain_data_is_not_a_poisoned_set(tmp_path: Path) -> None:
    path = save_npz(blobs_dataset(n_per_class=5), tmp_path / "clean.npz")
    with pytest.raises(DataError, match=r"not a poisoned set .*no 'is_poison', 'original_label'"):
        PoisonedDataset.load(path)


def test_a_mask_of_the_wrong_type_is_named_with_what_was_given() -> None:
    """A NumPy mask of the right length read "must have shape (66,)", the shape it had."""
    poisoned = poisoned_set()
    n = len(poisoned.dataset)
    with pytest.raises(DataError, match=rf"must be a tensor of shape \({n},\), .*got ndarray of "):
        dataclasses.replace(poisoned, is_poison=poisoned.is_poison.numpy())
    with pytest.raises(DataError, match=r"must be a bool tensor, got torch.int64 \(mask.bool\(\)"):
        dataclasses.replace(poisoned, is_poison=poisoned.is_poison.long())
